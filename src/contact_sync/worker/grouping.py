"""Group commit for one-event messages.

Celery runs one task per message, and a transaction per event would make
the database, not Celery, the limit. This task strategy (the hook Celery
offers for how a task's messages are handled) keeps one-event messages in
the worker's main process and hands them to a pool process together, up to
``GROUP_MAX``: their events are applied in one set-based transaction.

The group size follows the load, as in a database's group commit: while a
pool process is free, what arrived in one loop turn goes at once (after
``GROUP_LINGER_SECONDS``); while every pool process is busy, messages wait
and go together when one is done. A fixed linger made small groups at
moderate rates, and small groups cost the most per event.

Each message is acknowledged only after its group's transaction committed;
if the pool process dies, every message of its group is requeued, exactly
as ``acks_late`` with ``reject_on_worker_lost`` would do for one message.
A message that was delivered before is applied on its own, so a poison
message is still counted and parked alone.

Ops see each message as Celery would show it: every message becomes a
Celery ``Request`` registered in the worker's state (``celery inspect
reserved`` while it waits, ``active`` while its group runs), with the
signals and task events Celery sends (``task_received``; ``task_prerun``,
``task_postrun``, ``task_success``/``task_failure`` in the pool process
around the group; ``task-received``, ``task-started``, ``task-succeeded``
or ``task-rejected`` events when events are on). A revoked message is
acknowledged and skipped as Celery skips it, when it arrives or when its
group is about to go; ``revoke --terminate`` of a running one kills the
pool process of its whole group, whose other messages are requeued.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from billiard.einfo import ExceptionInfo  # type: ignore[import-untyped]
from celery import signals
from celery.app.task import Context
from celery.exceptions import Reject
from celery.states import FAILURE, REJECTED, SUCCESS
from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from celery.worker.state import revoked as revoked_ids
from celery.worker.state import task_ready, task_reserved
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2

from contact_sync.worker.celery_app import TASK_APPLY
from contact_sync.worker.consumer import check_task_headers
from contact_sync.worker.tasks import apply_call_completed as task_object
from contact_sync.worker.tasks import malformed, redelivered, run_message

GROUP_MAX = 100
GROUP_LINGER_SECONDS = 0.002

log = logging.getLogger("contact_sync.worker")

# (task id, delivered before, args, kwargs): what a pool process gets of a message.
Item = tuple[str, bool, Any, Any]


def _apply(items: list[Item]) -> None:
    fresh: list[Any] = []
    for key, again, args, kwargs in items:
        if not isinstance(args, list) or len(args) != 1 or kwargs:
            malformed(args, kwargs, "the task takes exactly one positional argument: the event")
        elif again:
            run_message(key, True, [args[0]])
        else:
            fresh.append(args[0])
    if fresh:
        run_message(f"group:{items[0][0]}", False, fresh)


def _signal_each(items: list[Item], hostname: str | None, send: Callable[[Item], Any]) -> None:
    """Call ``send`` for each message with its request as the task's current one.

    Receivers read ``sender.request`` (``task_success`` passes nothing
    else), so each message's context is pushed as Celery's tracer does.
    """
    task = task_object
    for item in items:
        key, again, args, kwargs = item
        task.request_stack.push(
            Context(
                id=key,
                task=TASK_APPLY,
                args=args,
                kwargs=kwargs,
                hostname=hostname,
                delivery_info={"redelivered": again},
                called_directly=False,
                is_eager=False,
            )
        )
        try:
            send(item)
        finally:
            task.request_stack.pop()


def apply_group(items: list[Item], hostname: str | None = None) -> float:
    """Run in a pool process: apply a group of one-event messages; returns its runtime.

    Each message gets the signals Celery's tracer sends around a task:
    ``task_prerun`` before the group's transaction, then ``task_success``
    or ``task_failure`` and ``task_postrun`` after it (with the group's
    outcome: its messages commit or are requeued together). A ``Reject``
    (requeue) sends no ``task_failure``, as in Celery.
    """
    task = task_object
    watched = any(
        s.receivers
        for s in (
            signals.task_prerun,
            signals.task_postrun,
            signals.task_success,
            signals.task_failure,
        )
    )
    started = time.monotonic()
    if not watched:
        _apply(items)
        return time.monotonic() - started

    def prerun(item: Item) -> None:
        signals.task_prerun.send(
            sender=task, task_id=item[0], task=task, args=item[2], kwargs=item[3]
        )

    _signal_each(items, hostname, prerun)
    try:
        _apply(items)
    except Reject as error:
        _signal_each(items, hostname, _postrun(REJECTED, error))
        raise
    except Exception as error:
        _signal_each(items, hostname, _failure(error, ExceptionInfo()))
        raise
    runtime = time.monotonic() - started

    def success(item: Item) -> None:
        signals.task_success.send(sender=task, result=None, runtime=runtime)
        _postrun(SUCCESS, None)(item)

    _signal_each(items, hostname, success)
    return runtime


def _postrun(state: str, retval: Any) -> Callable[[Item], None]:
    def send(item: Item) -> None:
        signals.task_postrun.send(
            sender=task_object,
            task_id=item[0],
            task=task_object,
            args=item[2],
            kwargs=item[3],
            retval=retval,
            state=state,
        )

    return send


def _failure(error: Exception, einfo: Any) -> Callable[[Item], None]:
    def send(item: Item) -> None:
        signals.task_failure.send(
            sender=task_object,
            task_id=item[0],
            exception=error,
            args=item[2],
            kwargs=item[3],
            traceback=error.__traceback__,
            einfo=einfo,
        )
        _postrun(FAILURE, error)(item)

    return send


def group_size(prefetch: int, processes: int) -> int:
    """The most messages a group takes.

    Every message of a running group holds a prefetch slot until its commit,
    so groups are sized for one more group than there are pool processes to
    fit in the prefetch window: the next group is ready whenever a process
    frees up. (Groups as large as the window ran one at a time, leaving the
    other processes idle.)
    """
    return max(1, min(GROUP_MAX, prefetch // (processes + 1)))


def _request(
    task: Any,
    app: Any,
    consumer: Any,
    message: Any,
    body: Any,
    ack: Any,
    reject: Any,
    app_utc: bool,
) -> Any:
    """Celery's ``Request`` for ``message``, built as Celery's own strategy builds it."""
    if body is None and "args" not in message.payload:
        body, headers, decoded, utc = message.body, message.headers, False, app_utc
    elif "args" in message.payload:
        body, headers, decoded, utc = hybrid_to_proto2(message, message.payload)
    else:
        body, headers, decoded, utc = proto1_to_proto2(message, body)
    check_task_headers(headers)  # headers made from a protocol 1 body were not checked yet
    return Request(
        message,
        on_ack=ack,
        on_reject=reject,
        app=app,
        hostname=consumer.hostname,
        eventer=consumer.event_dispatcher,
        task=task,
        connection_errors=consumer.connection_errors,
        body=body,
        headers=headers,
        decoded=decoded,
        utc=utc,
    )


def _time_limits(task: Any, group: list[Any]) -> tuple[float | None, float | None]:
    """The group's (hard, soft) limits: the shortest its messages ask for, else the task's.

    ``None`` leaves the pool's defaults (``task_time_limit``) in force.
    """
    hard = [r.time_limits[0] for r in group if r.time_limits[0]]
    soft = [r.time_limits[1] for r in group if r.time_limits[1]]
    return (
        min(hard) if hard else task.time_limit,
        min(soft) if soft else task.soft_time_limit,
    )


def _exception(error: Any) -> Any:
    """The exception the pool reports (an ``ExceptionInfo``, maybe wrapping it)."""
    exception = getattr(error, "exception", error)
    return getattr(exception, "exc", exception)


def strategy(task: Any, app: Any, consumer: Any, **_: Any) -> Any:
    """Celery's strategy hook for ``contact_sync.apply_call_completed``."""
    pool = consumer.pool
    timer = consumer.timer
    hostname = consumer.hostname
    eventer = consumer.event_dispatcher
    app_utc = app.uses_utc_timezone()
    processes = max(1, int(getattr(pool, "limit", None) or 1))
    multiplier = int(getattr(getattr(app, "conf", None), "worker_prefetch_multiplier", 0) or 0)
    most = group_size(multiplier * processes, processes) if multiplier > 0 else GROUP_MAX
    lock = threading.Lock()
    held: list[Any] = []  # Celery Requests, reserved and waiting for a pool process
    flush_scheduled = False
    running = 0  # groups handed to the pool and not finished
    log.info("group commit", extra={"pool_processes": processes, "group_max": most})

    def take() -> list[list[Any]]:
        nonlocal flush_scheduled, running
        groups: list[list[Any]] = []
        with lock:
            flush_scheduled = False
            # A full group goes even when every process is busy: the pool hands
            # it to the first one that frees up.
            while held and (running < processes or len(held) >= most):
                groups.append(held[:most])
                del held[:most]
                running += 1
        return groups

    def flush() -> None:
        nonlocal running
        while groups := take():
            emptied = False
            for group in groups:
                # Checked as Celery checks a request before it goes to the pool: a
                # revoked one is acknowledged, announced and skipped.
                live = [request for request in group if not request.revoked()]
                if live:
                    _dispatch(live)
                else:
                    with lock:
                        running -= 1
                    emptied = True
            if not emptied:
                return

    def finished() -> None:
        nonlocal running
        with lock:
            running -= 1
        flush()

    def _dispatch(group: list[Any]) -> None:
        done = False

        def accepted(pid: int, time_accepted: float) -> None:
            # A pool process took the group: its messages are active. (The result
            # can come before this notice; the messages are finished by then.)
            if not done:
                for request in group:
                    request.on_accepted(pid, time_accepted)

        def committed(runtime: Any) -> None:
            nonlocal done
            done = True
            for request in group:
                task_ready(request, successful=True)
                request.acknowledge()
                request.send_event("task-succeeded", result="None", runtime=runtime)
            finished()

        def failed(error: Any) -> None:
            # The pool process died, hit a time limit, or the group raised: give
            # every message back to the broker, as reject_on_worker_lost would
            # (Celery then sends task-rejected with requeue=True). A message
            # revoked with --terminate was acknowledged already.
            nonlocal done
            done = True
            log.warning(
                "group requeued",
                extra={"messages": len(group), "error": saferepr(_exception(error), 500)},
            )
            for request in group:
                task_ready(request)
                request.reject(requeue=True)
            finished()

        def timed_out(soft: bool, timeout: float) -> None:
            log.warning(
                "group time limit exceeded",
                extra={"messages": len(group), "soft": soft, "timeout_s": timeout},
            )

        hard, soft = _time_limits(task, group)
        result = pool.apply_async(
            apply_group,
            args=(
                [
                    (r.id, redelivered(r.delivery_info, r.request_dict), r.args, r.kwargs)
                    for r in group
                ],
                hostname,
            ),
            accept_callback=accepted,
            timeout_callback=timed_out,
            callback=committed,
            error_callback=failed,
            soft_timeout=soft,
            timeout=hard,
            correlation_id=group[0].id,
        )
        if result is not None:
            # Celery's Request.terminate/cancel reach the pool job through this.
            reference = weakref.ref(result)
            for request in group:
                request._apply_result = reference

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **__: Any) -> None:
        nonlocal flush_scheduled
        # InvalidTaskError and DecodeError are handled (parked) by the consumer.
        request = _request(task, app, consumer, message, body, ack, reject, app_utc)
        if (request.expires or request.id in revoked_ids) and request.revoked():
            return
        signals.task_received.send(sender=consumer, request=request)
        if eventer is not None and eventer.enabled and task.send_events:
            eventer.send(
                "task-received",
                uuid=request.id,
                name=request.name,
                args=request.argsrepr,
                kwargs=request.kwargsrepr,
                root_id=request.root_id,
                parent_id=request.parent_id,
                retries=request.request_dict.get("retries", 0),
                eta=request.eta and request.eta.isoformat(),
                expires=request.expires and request.expires.isoformat(),
            )
        task_reserved(request)
        if callbacks:
            for callback in callbacks:
                callback(request)
        with lock:
            held.append(request)
            full = len(held) >= most
            schedule = not full and not flush_scheduled and running < processes
            if schedule:
                flush_scheduled = True
        if full:
            flush()
        elif schedule:
            timer.call_after(GROUP_LINGER_SECONDS, flush)

    return handle
