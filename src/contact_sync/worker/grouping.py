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
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from contact_sync.worker.tasks import malformed, redelivered, run_message

GROUP_MAX = 100
GROUP_LINGER_SECONDS = 0.002

log = logging.getLogger("contact_sync.worker")


@dataclass(frozen=True)
class _Held:
    key: str
    again: bool
    args: Any
    kwargs: Any
    ack: Any
    reject: Any


def apply_group(items: list[tuple[str, bool, Any, Any]]) -> None:
    """Run in a pool process: apply a group of one-event messages."""
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


def group_size(prefetch: int, processes: int) -> int:
    """The most messages a group takes.

    Every message of a running group holds a prefetch slot until its commit,
    so groups are sized for one more group than there are pool processes to
    fit in the prefetch window: the next group is ready whenever a process
    frees up. (Groups as large as the window ran one at a time, leaving the
    other processes idle.)
    """
    return max(1, min(GROUP_MAX, prefetch // (processes + 1)))


def strategy(task: Any, app: Any, consumer: Any, **_: Any) -> Any:
    """Celery's strategy hook for ``contact_sync.apply_call_completed``."""
    pool = consumer.pool
    timer = consumer.timer
    connection_errors = consumer.connection_errors
    processes = max(1, int(getattr(pool, "limit", None) or 1))
    multiplier = int(getattr(getattr(app, "conf", None), "worker_prefetch_multiplier", 0) or 0)
    most = group_size(multiplier * processes, processes) if multiplier > 0 else GROUP_MAX
    lock = threading.Lock()
    held: list[_Held] = []
    flush_scheduled = False
    running = 0  # groups handed to the pool and not finished
    log.info("group commit", extra={"pool_processes": processes, "group_max": most})

    def flush() -> None:
        nonlocal flush_scheduled, running
        groups: list[list[_Held]] = []
        with lock:
            flush_scheduled = False
            # A full group goes even when every process is busy: the pool hands
            # it to the first one that frees up.
            while held and (running < processes or len(held) >= most):
                groups.append(held[:most])
                del held[:most]
                running += 1
        for group in groups:
            _dispatch(group)

    def finished() -> None:
        nonlocal running
        with lock:
            running -= 1
        flush()

    def _dispatch(group: list[_Held]) -> None:
        def committed(_: Any) -> None:
            for item in group:
                item.ack(log, connection_errors)
            finished()

        def failed(_: Any) -> None:
            # The pool process died (or the group could not run): give every
            # message back to the broker, as reject_on_worker_lost would.
            for item in group:
                item.reject(log, connection_errors, True)
            finished()

        pool.apply_async(
            apply_group,
            args=([(i.key, i.again, i.args, i.kwargs) for i in group],),
            callback=committed,
            error_callback=failed,
        )

    def handle(message: Any, _body: Any, ack: Any, reject: Any, _callbacks: Any, **__: Any) -> None:
        nonlocal flush_scheduled
        args, kwargs, _embed = message.decode()  # DecodeError is handled by the consumer
        headers = message.headers or {}
        item = _Held(
            str(headers.get("id")),
            redelivered(message.delivery_info, headers),
            args,
            kwargs,
            ack,
            reject,
        )
        with lock:
            held.append(item)
            full = len(held) >= most
            schedule = not full and not flush_scheduled and running < processes
            if schedule:
                flush_scheduled = True
        if full:
            flush()
        elif schedule:
            timer.call_after(GROUP_LINGER_SECONDS, flush)

    return handle
