"""The call pipeline's Python side: validate events and send them to the worker.

``publish_event`` sends one event as one message. ``EventPublisher`` groups
events into batch messages (up to 500 events, or whatever arrived within a
short time limit) over one producer connection: Celery's cost is per
message, so batching is what lets one worker apply thousands of events a
second.

On RabbitMQ every message is sent with publisher confirms and declares the
events queue with the worker's arguments (``worker/celery_app.py``): a send
returns once the quorum queue holds the message, and raises if it refused it.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from celery import Celery

from contact_sync.calls.events import MAX_BATCH, parse_event
from contact_sync.clock import utcnow
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, TASK_APPLY_BATCH, queue_depth

log = logging.getLogger("contact_sync.worker.publisher")


def _default_app() -> Celery:
    from contact_sync.worker.app import app

    return app


def validate(event: Any) -> None:
    """Raise ``InvalidEvent`` (with its dead-letter reason) unless the worker would accept it."""
    parse_event(event, now=utcnow())


def publish_event(event: dict[str, Any], *, app: Celery | None = None) -> str:
    """Validate one event and send it as one message; returns the Celery message id."""
    validate(event)
    result = (app or _default_app()).send_task(TASK_APPLY, args=[event], queue=QUEUE)
    return str(result.id)


class EventPublisher:
    """Batches events by size and by a short time limit; use it as a context manager.

    Thread-safe: a timer flushes a partial batch ``linger_seconds`` after its
    first event, so a quiet pipeline never holds events back for long.

    Events stay in the buffer until the broker took them: when a send fails
    (Redis restarting, say), ``publish``/``flush``/``close`` raise and keep
    every event for the next flush (do not publish them again), and a failed
    timer flush tries again a moment later.
    """

    def __init__(
        self,
        *,
        app: Celery | None = None,
        max_batch: int = MAX_BATCH,
        linger_seconds: float = 0.05,
        validate_events: bool = True,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be 1..{MAX_BATCH}")
        self._app = app or _default_app()
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._validate = validate_events
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._producer_cm = self._app.producer_or_acquire()
        self._producer = self._producer_cm.__enter__()
        self.messages_sent = 0
        self.events_sent = 0

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event for sending (validated first, so a bad one fails here)."""
        if self._validate:
            validate(event)
        with self._lock:
            self._buffer.append(event)
            if len(self._buffer) >= self._max_batch:
                self._flush_locked()
            elif self._timer is None and self._linger > 0:
                self._arm(self._linger)

    def flush(self) -> int:
        """Send what is buffered now; returns the number of events sent."""
        with self._lock:
            return self._flush_locked()

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._flush_on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _flush_on_timer(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # cancelled, or superseded by a flush that ran meanwhile
            try:
                self._flush_locked()
            except Exception as error:  # the broker refused: the events wait for the next try
                log.warning("publishing a batch failed; retrying", extra={"error": repr(error)})
                self._arm(max(self._linger, 0.5))

    def _flush_locked(self) -> int:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sent = 0
        while self._buffer:
            # Removed from the buffer only once the broker took it: a failed send
            # raises with every event still buffered.
            batch = self._buffer[: self._max_batch]
            self._app.send_task(
                TASK_APPLY_BATCH, args=[batch], queue=QUEUE, producer=self._producer
            )
            del self._buffer[: len(batch)]
            self.messages_sent += 1
            self.events_sent += len(batch)
            sent += len(batch)
        return sent

    def close(self) -> None:
        """Flush and release the connection."""
        with self._lock:
            self._flush_locked()
            self._producer_cm.__exit__(None, None, None)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_for_drain(app: Celery, timeout: float = 60.0) -> bool:
    """Wait until no message waits in the queue (for tools and tests); False on timeout."""
    deadline = time.monotonic() + timeout
    with app.connection_for_read() as conn:
        while time.monotonic() < deadline:
            if queue_depth(conn) == 0:
                return True
            time.sleep(0.05)
    return False
