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


def strategy(task: Any, app: Any, consumer: Any, **_: Any) -> Any:
    """Celery's strategy hook for ``contact_sync.apply_call_completed``."""
    pool = consumer.pool
    timer = consumer.timer
    connection_errors = consumer.connection_errors
    processes = max(1, int(getattr(pool, "limit", None) or 1))
    lock = threading.Lock()
    held: list[_Held] = []
    flush_scheduled = False
    running = 0  # groups handed to the pool and not finished

    def flush() -> None:
        nonlocal flush_scheduled, running
        with lock:
            flush_scheduled = False
            if not held or (running >= processes and len(held) < GROUP_MAX):
                return  # every process is busy: the next to finish takes them
            group = held[:]
            held.clear()
            running += 1

        def finished() -> None:
            nonlocal running
            with lock:
                running -= 1
            flush()

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
            full = len(held) >= GROUP_MAX
            schedule = not full and not flush_scheduled and running < processes
            if schedule:
                flush_scheduled = True
        if full:
            flush()
        elif schedule:
            timer.call_after(GROUP_LINGER_SECONDS, flush)

    return handle
