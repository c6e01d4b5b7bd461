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
from contact_sync.worker.tasks import malformed, redelivered, run_message, worker_app

GROUP_MAX = 100
GROUP_LINGER_SECONDS = 0.002

log = logging.getLogger("contact_sync.worker")

# (task id, delivered before, args, kwargs): what a pool process gets of a message.
Item = tuple[str, bool, Any, Any]


def _apply(app: Any, items: list[Item]) -> None:
    fresh: list[Any] = []
    for key, again, args, kwargs in items:
        if not isinstance(args, list) or len(args) != 1 or kwargs:
            expected = "the task takes exactly one positional argument: the event"
            malformed(app, args, kwargs, expected)
        elif again:
            run_message(app, key, True, [args[0]])
        else:
            fresh.append(args[0])
    if fresh:
        run_message(app, f"group:{items[0][0]}", False, fresh)


def _signal_each(
    task: Any, items: list[Item], hostname: str | None, send: Callable[[Item], Any]
) -> None:
    """Call ``send`` for each message with its request as the task's current one.

    Receivers read ``sender.request`` (``task_success`` passes nothing
    else), so each message's context is pushed as Celery's tracer does.
    """
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


_TASK_SIGNALS = (
    signals.task_prerun,
    signals.task_postrun,
    signals.task_success,
    signals.task_failure,
)


def apply_group(items: list[Item], hostname: str | None = None) -> float:
    """Run in a pool process: apply a group of one-event messages; returns its runtime.

    Each message gets the signals Celery's tracer sends around a task:
    ``task_prerun`` before the group's transaction, then ``task_success``
    or ``task_failure`` and ``task_postrun`` after it (with the group's
    outcome: its messages commit or are requeued together). A ``Reject``
    (requeue) sends no ``task_failure``, as in Celery.
    """
    app = worker_app()
    started = time.monotonic()
    if not any(s.receivers for s in _TASK_SIGNALS):
        _apply(app, items)
        return time.monotonic() - started
    return _apply_signalled(app, items, hostname, started)


def _apply_signalled(app: Any, items: list[Item], hostname: str | None, started: float) -> float:
    task = app.tasks[TASK_APPLY]

    def prerun(item: Item) -> None:
        signals.task_prerun.send(
            sender=task, task_id=item[0], task=task, args=item[2], kwargs=item[3]
        )

    _signal_each(task, items, hostname, prerun)
    try:
        _apply(app, items)
    except Reject as error:
        _signal_each(task, items, hostname, _postrun(task, REJECTED, error))
        raise
    except Exception as error:
        _signal_each(task, items, hostname, _failure(task, error, ExceptionInfo()))
        raise
    runtime = time.monotonic() - started

    def success(item: Item) -> None:
        signals.task_success.send(sender=task, result=None, runtime=runtime)
        _postrun(task, SUCCESS, None)(item)

    _signal_each(task, items, hostname, success)
    return runtime


def _postrun(task: Any, state: str, retval: Any) -> Callable[[Item], None]:
    def send(item: Item) -> None:
        signals.task_postrun.send(
            sender=task,
            task_id=item[0],
            task=task,
            args=item[2],
            kwargs=item[3],
            retval=retval,
            state=state,
        )

    return send


def _failure(task: Any, error: Exception, einfo: Any) -> Callable[[Item], None]:
    def send(item: Item) -> None:
        signals.task_failure.send(
            sender=task,
            task_id=item[0],
            exception=error,
            args=item[2],
            kwargs=item[3],
            traceback=error.__traceback__,
            einfo=einfo,
        )
        _postrun(task, FAILURE, error)(item)

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


class _Dispatched:
    """The pool's callbacks for one group handed to it."""

    def __init__(self, owner: GroupCommit, group: list[Any]) -> None:
        self.owner = owner
        self.group = group
        self.done = False

    def accepted(self, pid: int, time_accepted: float) -> None:
        # A pool process took the group: its messages are active. (The result
        # can come before this notice; the messages are finished by then.)
        if not self.done:
            for request in self.group:
                request.on_accepted(pid, time_accepted)

    def committed(self, runtime: Any) -> None:
        self.done = True
        for request in self.group:
            task_ready(request, successful=True)
            request.acknowledge()
            request.send_event("task-succeeded", result="None", runtime=runtime)
        self.owner.finished()

    def failed(self, error: Any) -> None:
        # The pool process died, hit a time limit, or the group raised: give
        # every message back to the broker, as reject_on_worker_lost would
        # (Celery then sends task-rejected with requeue=True). A message
        # revoked with --terminate was acknowledged already.
        self.done = True
        log.warning(
            "group requeued",
            extra={"messages": len(self.group), "error": saferepr(_exception(error), 500)},
        )
        for request in self.group:
            task_ready(request)
            request.reject(requeue=True)
        self.owner.finished()

    def timed_out(self, soft: bool, timeout: float) -> None:
        log.warning(
            "group time limit exceeded",
            extra={"messages": len(self.group), "soft": soft, "timeout_s": timeout},
        )


class GroupCommit:
    """Celery's strategy for ``contact_sync.apply_call_completed``: group commit.

    Messages are held in the worker's main process and handed to the pool in
    groups of at most ``most``; ``running`` counts groups not yet finished.
    Celery calls ``handle`` from its consumer loop; the pool's callbacks and
    the linger timer call ``flush`` and ``finished``, hence the lock.
    """

    def __init__(self, task: Any, app: Any, consumer: Any) -> None:
        self.task, self.app, self.consumer = task, app, consumer
        # Taken now, as Celery's own strategy takes them when the consumer (re)starts.
        self.pool, self.timer = consumer.pool, consumer.timer
        self.hostname, self.eventer = consumer.hostname, consumer.event_dispatcher
        self.app_utc = app.uses_utc_timezone()
        self.processes = max(1, int(getattr(self.pool, "limit", None) or 1))
        multiplier = int(getattr(getattr(app, "conf", None), "worker_prefetch_multiplier", 0) or 0)
        self.most = (
            group_size(multiplier * self.processes, self.processes) if multiplier > 0 else GROUP_MAX
        )
        self.lock = threading.Lock()
        self.held: list[Any] = []  # Celery Requests, reserved and waiting for a pool process
        self.flush_scheduled = False
        self.running = 0
        log.info("group commit", extra={"pool_processes": self.processes, "group_max": self.most})

    def handle(
        self, message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **_: Any
    ) -> None:
        """Take one message: reserve it, announce it as Celery does, and hold it for a group."""
        # InvalidTaskError and DecodeError are handled (parked) by the consumer.
        request = _request(
            self.task, self.app, self.consumer, message, body, ack, reject, self.app_utc
        )
        if (request.expires or request.id in revoked_ids) and request.revoked():
            return
        self._announce(request)
        task_reserved(request)
        if callbacks:
            for callback in callbacks:
                callback(request)
        self._hold(request)

    def _announce(self, request: Any) -> None:
        signals.task_received.send(sender=self.consumer, request=request)
        eventer = self.eventer
        if eventer is not None and eventer.enabled and self.task.send_events:
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

    def _hold(self, request: Any) -> None:
        with self.lock:
            self.held.append(request)
            full = len(self.held) >= self.most
            schedule = not full and not self.flush_scheduled and self.running < self.processes
            if schedule:
                self.flush_scheduled = True
        if full:
            self.flush()
        elif schedule:
            self.timer.call_after(GROUP_LINGER_SECONDS, self.flush)

    def _take(self) -> list[list[Any]]:
        groups: list[list[Any]] = []
        with self.lock:
            self.flush_scheduled = False
            # A full group goes even when every process is busy: the pool hands
            # it to the first one that frees up.
            while self.held and (self.running < self.processes or len(self.held) >= self.most):
                groups.append(self.held[: self.most])
                del self.held[: self.most]
                self.running += 1
        return groups

    def flush(self) -> None:
        """Hand every group that may go now to the pool."""
        while groups := self._take():
            emptied = False
            for group in groups:
                # Checked as Celery checks a request before it goes to the pool: a
                # revoked one is acknowledged, announced and skipped.
                live = [request for request in group if not request.revoked()]
                if live:
                    self._dispatch(live)
                else:
                    with self.lock:
                        self.running -= 1
                    emptied = True
            if not emptied:
                return

    def finished(self) -> None:
        """A group committed or was requeued: its pool process is free for the next."""
        with self.lock:
            self.running -= 1
        self.flush()

    def _dispatch(self, group: list[Any]) -> None:
        run = _Dispatched(self, group)
        hard, soft = _time_limits(self.task, group)
        items = [
            (r.id, redelivered(r.delivery_info, r.request_dict), r.args, r.kwargs) for r in group
        ]
        result = self.pool.apply_async(
            apply_group,
            args=(items, self.hostname),
            accept_callback=run.accepted,
            timeout_callback=run.timed_out,
            callback=run.committed,
            error_callback=run.failed,
            soft_timeout=soft,
            timeout=hard,
            correlation_id=group[0].id,
        )
        if result is not None:
            # Celery's Request.terminate/cancel reach the pool job through this.
            reference = weakref.ref(result)
            for request in group:
                request._apply_result = reference


def strategy(task: Any, app: Any, consumer: Any, **_: Any) -> Any:
    """Celery's strategy hook for ``contact_sync.apply_call_completed``."""
    return GroupCommit(task, app, consumer).handle
