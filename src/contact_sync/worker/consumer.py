"""A Celery consumer that dead-letters messages Celery would otherwise drop.

Stock Celery logs and acknowledges a message whose body cannot be decoded,
whose task name is unknown, or whose headers are malformed: the event is
gone. Here each is parked in ``dead_letters`` as ``invalid_payload`` with
the body as received, then acknowledged, so the queue keeps moving and
nothing is lost.

Once parked, each sends what Celery 5.7's handlers send, so that signal
receivers and event monitors (Flower) see these messages as before:
``task_rejected`` for a message that is not a task message or is an
invalid one, ``task_unknown`` and a ``task-failed`` event (when events are
on) for an unknown task name. An undecodable body also sends
``task_rejected``, which Celery itself does not (it only logs): a parked
message is a refused one, whatever made it so. A message that could not be
parked (database down) stays unacknowledged and is parked again on the
consumer's timer, backing off, until it is parked or its channel is gone
(the broker then delivers it again); it sends nothing until parked.

The queue is a trust boundary (README, "Security"): whoever can write to
it is a publisher, not an operator. So only the two contract tasks run
(any other name, Celery's built-ins included, is parked unrun); a
publisher's timing headers (``eta``, ``countdown``, ``expires``,
``timelimit``, ``retries``) and linked tasks (``callbacks``, ``errbacks``,
``chain``, ``chord``) are dropped before Celery reads them; and a
compressed body is parked without being inflated.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from celery import signals
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from kombu import compression
from kombu.utils.json import dumps

from contact_sync.clock import utcnow
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.ops.dead_letters import park
from contact_sync.ops.metrics import EVENTS
from contact_sync.worker.celery_app import TASK_APPLY, TASK_APPLY_BATCH, settings_of
from contact_sync.worker.failures import is_transient

# The only task names this worker runs: the contract of docs/celery-message.md.
ALLOWED_TASKS = frozenset({TASK_APPLY, TASK_APPLY_BATCH})
_ONLY = f"only {' and '.join(sorted(ALLOWED_TASKS))} run here"
# Headers (protocol 2) or body fields (protocol 1) with which a publisher would
# decide when, or whether, an event applies: dropped, whatever they hold.
PUBLISHER_TIMING = ("eta", "countdown", "expires", "timelimit", "retries")
# What a task runs after it (protocol 2's embed; protocol 1 body fields): tasks the
# worker would publish on a publisher's say-so. Dropped as well.
LINKS = ("callbacks", "errbacks", "chain", "chord")

log = logging.getLogger("contact_sync.worker")


def _text(body: Any) -> Any:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return body


# Seconds before parking again a message the database could not take, then the last
# one for ever: a PostgreSQL restart takes about a second, an outage minutes.
PARK_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


def _park(app: Any, payload: Any, text: str, message: Any) -> bool:
    """Park ``payload`` and acknowledge ``message``; whether it was parked.

    This runs in the worker's main process, inside Celery's consumer: an
    exception here stops the whole worker. When the database cannot take
    the dead letter (restarting, say), the message is left unacknowledged
    instead and the consumer tries again later (``DeadLetteringConsumer.park``).
    """
    event = payload.get("event") if isinstance(payload, dict) else None
    for attempt in (1, 2):
        try:
            _park_once(app, payload, event, text)
            break
        except Exception as error:
            # Once more at once: the first failure is often a pooled connection that
            # a database restart closed, and a fresh one works.
            if attempt == 1 and is_transient(error):
                continue
            log.warning(
                "could not park an undeliverable message; left unacknowledged, parked later",
                extra={"reason": "invalid_payload", "error": repr(error)[:500]},
            )
            return False
    # Counted here, once: a message parked before any task runs is never reported by one.
    EVENTS.labels("dead_lettered").inc()
    log.warning(text, extra={"outcome": "dead_lettered", "reason": "invalid_payload"})
    message.ack()
    return True


def _still_held(message: Any) -> bool:
    """Whether ``message`` is unacknowledged on a channel that is still open.

    Once its channel closed (a lost connection, a restarted broker) the
    broker delivers the message again, and acknowledging it on the old
    channel would fail: a later park would make a second dead letter.
    """
    if message.acknowledged:
        return False
    channel = message.channel
    # py-amqp's channels say ``is_open``; kombu's virtual ones (Redis) say ``closed``.
    return bool(getattr(channel, "is_open", True)) and not getattr(channel, "closed", False)


def _park_once(app: Any, payload: Any, event: Any, text: str) -> None:
    """One unit of work: the message kept as received, keyed by the event it carries."""
    from contact_sync.worker.runtime import get_engine

    with unit_of_work(get_engine(settings_of(app))) as uow:
        park(
            uow.conn,
            payloads=[payload],
            events=[event],
            reason="invalid_payload",
            message=text[:2000],
            now=utcnow(),
        )
        uow.commit()


def _body(body: Any, message: Any) -> Any:
    """The message body as received: Celery passes ``None`` for protocol-2 messages."""
    if body is not None:
        return _text(body)
    try:
        return message.decode()  # JSON is all this worker accepts
    except Exception:  # undecodable or another content type: keep the text
        return _text(message.body)


def _first_arg(body: Any) -> Any:
    if isinstance(body, list | tuple) and body and isinstance(body[0], list | tuple) and body[0]:
        return body[0][0]
    return None


def check_task_headers(headers: Any) -> None:
    """Refuse task headers that Celery would trip over later, in the worker's main process.

    Celery trusts them: a task name or id that is not a string, or
    ``stamped_headers`` that is not a list, raised in its consumer or its
    ``Request`` and stopped the worker, then every worker the message went to
    next. Such a message is parked as invalid instead. Without an id a
    message cannot be revoked, inspected or counted as poison.
    """
    if not isinstance(headers, dict) or not isinstance(headers.get("task"), str):
        raise InvalidTaskError("the message names no task (a string in header 'task')")
    if not isinstance(headers.get("id"), str):
        raise InvalidTaskError("the message has no task id (a string in header 'id')")
    if headers.get("shadow") is not None and not isinstance(headers["shadow"], str):
        raise InvalidTaskError("header 'shadow' must be a task name")
    stamped = headers.get("stamped_headers")
    if stamped is not None and not (
        isinstance(stamped, list) and all(isinstance(name, str) for name in stamped)
    ):
        raise InvalidTaskError("header 'stamped_headers' must be a list of names")
    if headers.get("stamps") is not None and not isinstance(headers["stamps"], dict):
        raise InvalidTaskError("header 'stamps' must be an object")


def ignore_publisher_controls(fields: dict[str, Any]) -> None:
    """Drop what a publisher could use to delay, drop, time-limit or chain a task.

    A batch message with ``expires`` in the past was discarded, with
    ``timelimit`` ``[0.001, 0.001]`` its pool process was killed and the
    message lost, with ``eta`` in 2099 it was held for ever. Publishers
    expect an event to apply, so these are ignored rather than parked; the
    limits ops configure for the worker still apply.
    """
    for name in (*PUBLISHER_TIMING, *LINKS):
        fields.pop(name, None)


def _unlink(message: Any, body: Any) -> None:
    """Empty a protocol-2 body's embed, where it is read: in the message as received."""
    embed = body[2]
    if isinstance(body, list) and isinstance(embed, dict) and any(map(embed.get, LINKS)):
        body[2] = dict.fromkeys(LINKS)
        # The pool process decodes the body again from these bytes (batch messages).
        # kombu's writer: its reader may have made dates or bytes of type markers.
        message.body = dumps(body).encode("utf-8")  # type: ignore[no-untyped-call]
        message.content_encoding = "utf-8"


def _refuse_compressed(body: bytes) -> bytes:
    raise ValueError("compressed message bodies are refused")


def refuse_compressed_bodies() -> None:
    """Make kombu refuse, rather than inflate, every compressed body it knows.

    kombu inflates a body whose ``compression`` header names a codec as it
    makes the message, before the consumer sees it: a 137 KB zlib body
    became 105 MB in the worker's main process. With this, the body stays
    as received, kombu hands the message to ``on_decode_error`` (the
    refusal is in ``message.errors``), and the consumer parks it there; a
    codec kombu does not know fails the same way. Publishers' encoders are
    kept.
    """
    for name in list(compression.encoders()):  # type: ignore[no-untyped-call]
        encoder, _ = compression.get_encoder(name)  # type: ignore[no-untyped-call]
        compression.register(encoder, _refuse_compressed, name)  # type: ignore[no-untyped-call]


def _base64(body: Any) -> str:
    raw = body if isinstance(body, bytes) else str(body).encode("utf-8", "surrogateescape")
    return base64.b64encode(raw).decode("ascii")


def _is_task_body(body: Any) -> bool:
    """Whether ``body`` is protocol 2's ``[args, kwargs, embed]``."""
    return (
        isinstance(body, list | tuple)
        and len(body) == 3
        and isinstance(body[0], list | tuple)
        and isinstance(body[1], dict)
        and (body[2] is None or isinstance(body[2], dict))
    )


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, parking undeliverable messages instead of dropping them."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        # The heartbeat file `contact-sync worker-health` reads (worker/health.py).
        default_steps: ClassVar[list[str]] = [
            *Consumer.Blueprint.default_steps,
            "contact_sync.worker.health:Heartbeat",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        refuse_compressed_bodies()
        super().__init__(*args, **kwargs)

    def park(
        self,
        payload: Any,
        text: str,
        message: Any,
        then: Callable[[], None] | None = None,
        attempt: int = 0,
    ) -> None:
        """Park ``message`` with ``payload`` and run ``then``; else try again later.

        A message the database could not take stays unacknowledged. Redis
        would hand it out again after its visibility timeout, but RabbitMQ
        never does while this worker's channel lives: without the retry on
        the consumer's timer (the event loop's, so nothing blocks) it was
        held unacknowledged until the worker stopped.
        """
        if _park(self.app, payload, text, message):
            if then is not None:
                then()
            return
        if _still_held(message):
            delay = PARK_RETRY_DELAYS[min(attempt, len(PARK_RETRY_DELAYS) - 1)]
            self.timer.call_after(delay, self.park, (payload, text, message, then, attempt + 1))

    def _rejected(self, message: Any, exc: Exception | None) -> Callable[[], None]:
        """What Celery sends for a message it refuses, sent once it is parked."""
        return lambda: signals.task_rejected.send(sender=self, message=message, exc=exc)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler of task messages, behind checks of what the publisher sent.

        In order: a compressed message is parked unopened; a task name other
        than the two contract tasks is parked unrun (``celery.map`` ran
        ``apply_call_completed`` in this process, ``celery.group`` logged
        the event); headers Celery cannot use (``check_task_headers``) and
        a protocol-2 body that is not ``[args, kwargs, embed]`` are parked
        (Celery's strategies, ours included, raised on them in this process
        and stopped the whole worker); what is left loses its timing headers
        and links (``ignore_publisher_controls``). kombu keeps the decoded
        body, so the strategy does not decode it again.
        """
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            headers = message.headers
            if isinstance(headers, dict) and headers.get("compression") is not None:
                return self.on_compressed(message)
            if not (isinstance(headers, dict) and "task" in headers):
                return self._protocol_1(message, handle)
            name = headers["task"]
            if isinstance(name, str) and name not in ALLOWED_TASKS:
                return self.on_task_not_allowed(name, message)
            try:
                check_task_headers(headers)
            except InvalidTaskError as refused:
                return self.on_invalid_task(None, message, refused)
            try:
                body = message.decode()
            except Exception:  # Celery parks it as undecodable, as before
                return handle(message)
            if not _is_task_body(body):
                error = InvalidTaskError("the body must be [args, kwargs, embed]")
                return self.on_invalid_task(body, message, error)
            ignore_publisher_controls(headers)
            _unlink(message, body)
            return handle(message)

        return on_task_received

    def _protocol_1(self, message: Any, handle: Any) -> Any:
        """A message naming its task in the body (protocol 1), checked as protocol 2 is."""
        try:
            body = message.decode()
        except Exception:  # Celery parks it as undecodable
            return handle(message)
        if isinstance(body, dict) and "task" in body:
            name = body["task"]
            if isinstance(name, str) and name not in ALLOWED_TASKS:
                return self.on_task_not_allowed(name, message)
            try:
                check_task_headers(body)  # its headers are in the body
            except InvalidTaskError as refused:
                return self.on_invalid_task(body, message, refused)
            ignore_publisher_controls(body)  # the cached decoded body Celery reads next
        return handle(message)

    def on_compressed(self, message: Any) -> None:
        """Park a compressed message as received, never inflated (``refuse_compressed_bodies``)."""
        headers = message.headers
        name = _text(str(headers.get("compression")))[:100]
        payload = {
            "compression": name,
            "headers": _text(str(headers))[:2000],
            "body_base64": _base64(message.body),
        }
        exc = InvalidTaskError(f"compressed message ({name!r}) refused")
        text = f"compressed message refused (compression {name!r})"
        self.park(payload, text, message, self._rejected(message, exc))

    def on_task_not_allowed(self, name: str, message: Any) -> None:
        """Park a message for a task other than the two contract tasks, without running it.

        A name Celery does not know goes where Celery sends it (``on_unknown_task``,
        with ``task_unknown``); one of its built-ins (``celery.map``, ``celery.group``,
        ...) is refused with ``task_rejected``. The body is kept in the dead letter and
        never logged: it holds the event's personal data.
        """
        if name not in self.app.tasks:
            return self.on_unknown_task(None, message, KeyError(name))
        body = _body(None, message)
        self.park(
            {"task": name, "event": _first_arg(body), "body": body},
            f"task not allowed {name[:200]!r}: {_ONLY}",
            message,
            self._rejected(message, InvalidTaskError(f"task not allowed: {name[:200]!r}")),
        )
        return None

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # kombu hands a message whose body it refused to inflate here (message.errors).
        headers = message.headers
        if isinstance(headers, dict) and headers.get("compression") is not None:
            self.on_compressed(message)
            return
        # A queue entry the transport could not read as a message at all arrives
        # here with its reason in a header (worker/transport.py: read_entry).
        malformed = (message.headers or {}).get("malformed")
        reason = (
            f"queue entry is not a message: {malformed}"
            if isinstance(malformed, str)
            else f"message body could not be decoded: {exc}"
        )
        self.park({"raw_body": _text(message.body)}, reason, message, self._rejected(message, exc))

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self.park(
            {"raw_body": _body(body, message)},
            "message is not a Celery task message",
            message,
            self._rejected(message, None),
        )

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        body = _body(body, message)
        # Protocol 2 names the task in its headers, protocol 1 in its body.
        fields = message.headers if "task" in (message.headers or {}) else body
        name, task_id = (
            (fields.get("task"), fields.get("id")) if isinstance(fields, dict) else (None, None)
        )

        def unknown() -> None:
            # Made by Celery's Events bootstep; it sends only while task events are on.
            dispatcher = getattr(self, "event_dispatcher", None)
            if dispatcher:
                dispatcher.send("task-failed", uuid=task_id, exception=f"NotRegistered({name!r})")
            signals.task_unknown.send(sender=self, message=message, exc=exc, name=name, id=task_id)

        self.park(
            {"task": name, "event": _first_arg(body), "body": body},
            f"unknown task {str(name)[:200]!r}: {_ONLY}",
            message,
            unknown,
        )

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self.park(
            {"body": _body(body, message), "headers": _text(str(message.headers))},
            f"invalid task message: {exc}",
            message,
            self._rejected(message, exc),
        )
