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
parked (database down) is left for redelivery and sends nothing yet.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer

from contact_sync.clock import utcnow
from contact_sync.dead_letters import record
from contact_sync.events import event_id_of, team_id_of
from contact_sync.worker.failures import is_transient

log = logging.getLogger("contact_sync.worker")


def _text(body: Any) -> Any:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return body


def _park(payload: Any, text: str, message: Any) -> bool:
    """Park ``payload`` and acknowledge ``message``; whether it was parked.

    This runs in the worker's main process, inside Celery's consumer: an
    exception here stops the whole worker. When the database cannot take
    the dead letter (restarting, say), the message is left unacknowledged
    instead: Redis hands it out again after the visibility timeout (at once
    if this worker stops), and it is parked then.
    """
    from contact_sync.worker.runtime import get_engine

    event = payload.get("event") if isinstance(payload, dict) else None
    for attempt in (1, 2):
        try:
            with get_engine().begin() as conn:
                record(
                    conn,
                    payload=payload,
                    reason="invalid_payload",
                    message=text[:2000],
                    event_id=event_id_of(event),
                    team_id=team_id_of(event),
                    now=utcnow(),
                )
            break
        except Exception as error:
            # Once more at once: the first failure is often a pooled connection that
            # a database restart closed, and a fresh one works.
            if attempt == 1 and is_transient(error):
                continue
            log.warning(
                "could not park an undeliverable message; left unacknowledged for redelivery",
                extra={"reason": "invalid_payload", "error": repr(error)[:500]},
            )
            return False
    log.warning(text, extra={"outcome": "dead_lettered", "reason": "invalid_payload"})
    message.ack()
    return True


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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


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
    limits = headers.get("timelimit")
    if limits and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(limit is None or _number(limit) for limit in limits)
    ):
        raise InvalidTaskError("header 'timelimit' must be [hard, soft] seconds")


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

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler of task messages, behind checks of the headers and the body's shape.

        Task strategies, Celery's own and ours (worker/grouping.py), unpack a
        protocol-2 body as ``[args, kwargs, embed]`` in this process: any other
        JSON (``[]``, ``{}``, ``null``, ``""``) raised there and stopped the
        whole worker, then every worker the message went to next; other shapes
        failed in the task and were acknowledged with no dead letter. Such a
        message is parked instead, and so is one whose headers Celery cannot
        use (``check_task_headers``). kombu keeps the decoded body, so the
        strategy does not decode it again.
        """
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            headers = message.headers
            if isinstance(headers, dict) and "task" in headers:  # protocol 2
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
            return handle(message)

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # A queue entry the transport could not read as a message at all arrives
        # here with its reason in a header (worker/transport.py: read_entry).
        malformed = (message.headers or {}).get("malformed")
        reason = (
            f"queue entry is not a message: {malformed}"
            if isinstance(malformed, str)
            else f"message body could not be decoded: {exc}"
        )
        if _park({"raw_body": _text(message.body)}, reason, message):
            signals.task_rejected.send(sender=self, message=message, exc=exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        if _park(
            {"raw_body": _body(body, message)}, "message is not a Celery task message", message
        ):
            signals.task_rejected.send(sender=self, message=message, exc=None)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        body = _body(body, message)
        # Protocol 2 names the task in its headers, protocol 1 in its body.
        fields = message.headers if "task" in (message.headers or {}) else body
        name, task_id = (
            (fields.get("task"), fields.get("id")) if isinstance(fields, dict) else (None, None)
        )
        if not _park(
            {"task": name, "event": _first_arg(body), "body": body},
            f"unknown task {name!r}",
            message,
        ):
            return
        # Made by Celery's Events bootstep; it sends only while task events are on.
        dispatcher = getattr(self, "event_dispatcher", None)
        if dispatcher:
            dispatcher.send("task-failed", uuid=task_id, exception=f"NotRegistered({name!r})")
        signals.task_unknown.send(sender=self, message=message, exc=exc, name=name, id=task_id)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if _park(
            {"body": _body(body, message), "headers": _text(str(message.headers))},
            f"invalid task message: {exc}",
            message,
        ):
            signals.task_rejected.send(sender=self, message=message, exc=exc)
