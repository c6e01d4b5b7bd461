"""The Celery tasks: translate a message, call the apply use case, log the result."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from celery import Celery, Task, current_app
from celery.exceptions import Reject

from contact_sync.calls.apply import Outcome, apply_free_payloads, apply_payloads
from contact_sync.calls.events import MAX_BATCH, Reason, call_id_of, event_id_of, team_id_of
from contact_sync.clock import utcnow
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.ops.dead_letters import park
from contact_sync.ops.metrics import APPLY_SECONDS, CONFLICT_RETRIES, DEFERRED_EVENTS, EVENTS
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import TASK_APPLY, TASK_APPLY_BATCH, settings_of, uses_amqp
from contact_sync.worker.failures import backoff_seconds, is_transient
from contact_sync.worker.poison import count_attempt, forget, poison_text
from contact_sync.worker.runtime import get_engine

log = logging.getLogger("contact_sync.worker")
_T = TypeVar("_T")


def redelivered(delivery_info: Any, headers: Any) -> bool:
    """Whether the broker handed this message out before (kombu marks restored messages)."""
    return bool((delivery_info or {}).get("redelivered") or (headers or {}).get("redelivered"))


def _park(
    settings: Settings, payloads: Sequence[Any], reason: Reason, message: str
) -> list[Outcome]:
    """Dead-letter every payload of a message in one unit of work."""
    with unit_of_work(get_engine(settings)) as uow:
        park(uow.conn, payloads=payloads, reason=reason, message=message, now=utcnow())
        uow.commit()
    return [
        Outcome(
            "dead_lettered",
            event_id_of(p),
            team_id_of(p),
            reason=reason,
            message=message,
            call_id=call_id_of(p),
        )
        for p in payloads
    ]


def _apply(settings: Settings, payloads: Sequence[Any]) -> list[Outcome]:
    """Apply payloads, committed before returning: first what no other transaction
    holds, then, in a second unit of work, the events deferred for it.

    The second pass waits for the other transaction (docs/design.md §5). Were it
    to fail, the whole call is retried: the first pass's events are then
    duplicates, and the message is acknowledged only after both committed.
    """
    engine = get_engine(settings)
    with unit_of_work(engine) as uow:
        found, deferred = apply_free_payloads(
            uow.conn, payloads, min_confidence=settings.min_confidence
        )
        uow.commit()
    if deferred:
        DEFERRED_EVENTS.inc(len(deferred))
        with unit_of_work(engine) as uow:
            later = apply_payloads(
                uow.conn, [payloads[i] for i in deferred], min_confidence=settings.min_confidence
            )
            uow.commit()
        found.update(zip(deferred, later, strict=True))
    return [found[index] for index in range(len(payloads))]


def _apply_isolating_failures(settings: Settings, payloads: Sequence[Any]) -> list[Outcome]:
    """Apply the batch; if it fails on something not transient, find the culprit.

    Each payload is then tried alone, so only the one that breaks is parked.
    """
    try:
        return _apply(settings, payloads)
    except Exception as error:
        if is_transient(error):
            raise
        if len(payloads) == 1:
            log.exception("event cannot be applied", extra={"event_id": event_id_of(payloads[0])})
            message = f"applying failed: {error!r}"[:2000]
            return _park(settings, payloads, "poison_message", message)
    outcomes: list[Outcome] = []
    for payload in payloads:
        outcomes += _apply_isolating_failures(settings, [payload])
    return outcomes


def _count_attempt(settings: Settings, key: str) -> int:
    """Count a delivery, committed at once (it must outlive a worker that dies next)."""
    with unit_of_work(get_engine(settings)) as uow:
        count = count_attempt(uow.conn, message_key=key)
        uow.commit()
    return count


def _forget(settings: Settings, key: str) -> None:
    with unit_of_work(get_engine(settings)) as uow:
        forget(uow.conn, message_key=key)
        uow.commit()


def _retrying_transient(work: Callable[[], _T], key: str, *, seconds: float) -> _T:
    """Run ``work``, retrying transient errors in place with jittered backoff.

    Each try is a whole unit of work, opened again. Retrying here rather than
    with ``Task.retry`` keeps the message on its original delivery:
    ``Task.retry`` republishes it with an ETA, and ETA messages on Redis can
    be lost (we saw batch messages vanish that way). If the error outlasts
    ``seconds`` (``transient_retry_seconds``) the message is requeued, never
    dropped and never dead-lettered.
    """
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return work()
        except Exception as error:
            if not is_transient(error):
                raise
            CONFLICT_RETRIES.inc()
            delay = backoff_seconds(attempt, cap=10.0)
            if time.monotonic() + delay > deadline:
                log.warning("transient error persists, requeueing", extra={"task_id": key})
                raise Reject(repr(error)[:500], requeue=True) from None
            log.warning(
                "transient error, retrying",
                extra={"task_id": key, "retry_in_s": round(delay, 2), "error": repr(error)[:500]},
            )
            time.sleep(delay)
            attempt += 1


def _deliver(app: Celery, key: str, again: bool, payloads: Sequence[Any]) -> list[Outcome]:
    """Apply a message's payloads once, or park them if the message is poison."""
    settings = settings_of(app)

    def retrying(work: Callable[[], _T]) -> _T:
        return _retrying_transient(work, key, seconds=settings.transient_retry_seconds)

    if not again or uses_amqp(app.conf.broker_url):
        # RabbitMQ counts deliveries itself: its poison messages were parked
        # before reaching a pool process (worker/amqp.py).
        return retrying(lambda: _apply_isolating_failures(settings, payloads))
    # Counted once per delivery (not per retry inside it): only deliveries
    # that never finished, because their worker died, make a message poison.
    limit = settings.poison_max_attempts
    if retrying(lambda: _count_attempt(settings, key)) > limit:
        message = poison_text(limit)
        outcomes = retrying(lambda: _park(settings, payloads, "poison_message", message))
    else:
        outcomes = retrying(lambda: _apply_isolating_failures(settings, payloads))
    retrying(lambda: _forget(settings, key))
    return outcomes


def _report(key: str, outcomes: Sequence[Outcome], elapsed: float) -> None:
    """A line per event (what happened to it), then one for the message (its size and time).

    The events of a message share one transaction, so its duration is the
    message's, not any event's: it is logged once, on the message's line.
    Ids and outcomes only, never the event's contents (README, "Logs").
    """
    APPLY_SECONDS.observe(elapsed)
    for outcome in outcomes:
        EVENTS.labels(outcome.outcome).inc()
        log.info(
            outcome.outcome,
            extra={
                "event_id": outcome.event_id,
                "call_id": outcome.call_id,
                "contact_id": outcome.contact_id,
                "team_id": outcome.team_id,
                "outcome": outcome.outcome,
                "reason": outcome.reason,
                "version": outcome.version,
            },
        )
    log.info(
        "message done",
        extra={"task_id": key, "events": len(outcomes), "duration_ms": round(elapsed * 1000, 2)},
    )


def worker_app() -> Celery:
    """The app this worker process runs (Celery makes it current when the worker starts)."""
    app: Celery = current_app._get_current_object()
    return app


def run_message(app: Celery, key: str, again: bool, payloads: Sequence[Any]) -> None:
    """Apply one message's payloads (``again``: it was delivered before) and log each outcome."""
    started = time.perf_counter()
    outcomes = _deliver(app, key, again, payloads)
    _report(key, outcomes, time.perf_counter() - started)


def park_poison(key: str, task: str, args: Any, kwargs: Any, why: str) -> None:
    """Run in a pool process: park a poison message's events unapplied (RabbitMQ).

    The events are kept as they are; one that is not an event, or arguments
    not shaped as the task takes them, is kept as ``{"args", "kwargs"}``.
    """
    started = time.perf_counter()
    settings = settings_of(worker_app())
    single = isinstance(args, list) and len(args) == 1 and not kwargs
    if single and task == TASK_APPLY:
        payloads = [args[0]]
    elif single and task == TASK_APPLY_BATCH and isinstance(args[0], list):
        payloads = args[0]
    else:
        payloads = [{"args": args, "kwargs": kwargs}]
    outcomes = (
        _retrying_transient(
            lambda: _park(settings, payloads, "poison_message", why),
            key,
            seconds=settings.transient_retry_seconds,
        )
        if payloads
        else []
    )
    _report(key, outcomes, time.perf_counter() - started)


def _task_run(task: Task, payloads: Sequence[Any]) -> None:
    request = task.request
    again = redelivered(request.delivery_info, request.headers)
    run_message(task.app, str(request.id), again, payloads)


def malformed(app: Celery, args: Any, kwargs: Any, expected: str) -> None:
    """Park a message whose arguments are not what the task takes."""
    _park(settings_of(app), [{"args": args, "kwargs": kwargs}], "invalid_payload", expected)
    EVENTS.labels("dead_lettered").inc()
    log.warning("malformed message", extra={"outcome": "dead_lettered", "reason": expected})


def apply_call_completed(self: Task, *args: Any, **kwargs: Any) -> None:
    """Apply one ``call.completed`` event (the single positional argument)."""
    if len(args) != 1 or kwargs:
        expected = "the task takes exactly one positional argument: the event"
        malformed(self.app, list(args), kwargs, expected)
        return
    _task_run(self, [args[0]])


def apply_call_completed_batch(self: Task, *args: Any, **kwargs: Any) -> None:
    """Apply a list of up to 500 events, each with every guarantee it has alone."""
    if len(args) != 1 or kwargs or not isinstance(args[0], list) or len(args[0]) > MAX_BATCH:
        malformed(
            self.app,
            list(args),
            kwargs,
            f"the task takes one positional argument: a list of ≤ {MAX_BATCH} events",
        )
        return
    if args[0]:
        _task_run(self, args[0])


def register_tasks(app: Celery) -> None:
    """Register the two contract tasks on ``app`` (``create_app`` does, for every app).

    Messages of the one-event task are grouped in the worker (worker/grouping.py);
    its function body still serves direct calls and eager runs.
    """
    options: dict[str, Any] = {"bind": True, "acks_late": True, "reject_on_worker_lost": True}
    app.task(name=TASK_APPLY, Strategy="contact_sync.worker.grouping:strategy", **options)(
        apply_call_completed
    )
    app.task(name=TASK_APPLY_BATCH, **options)(apply_call_completed_batch)
