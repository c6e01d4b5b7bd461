"""The call pipeline's Python side: validate events and send them to the worker.

``publish_event`` sends one event as one message. ``EventPublisher`` groups
events into batch messages (up to 500 events, or whatever arrived within a
short time limit) over one producer connection: Celery's cost is per
message, so batching is what lets one worker apply thousands of events a
second.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from celery import Celery

from contact_sync.clock import utcnow
from contact_sync.events import MAX_BATCH, parse_event
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, TASK_APPLY_BATCH


def _default_app() -> Celery:
    from contact_sync.worker import app

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
            elif len(self._buffer) == 1 and self._linger > 0:
                self._timer = threading.Timer(self._linger, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> int:
        """Send what is buffered now; returns the number of events sent."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        self._app.send_task(TASK_APPLY_BATCH, args=[batch], queue=QUEUE, producer=self._producer)
        self.messages_sent += 1
        self.events_sent += len(batch)
        return len(batch)

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
    """Wait until the queue is empty (for tools and tests); False on timeout."""
    deadline = time.monotonic() + timeout
    with app.connection_for_read() as conn:
        client = conn.default_channel.client
        while time.monotonic() < deadline:
            if client.llen(QUEUE) == 0:
                return True
            time.sleep(0.05)
    return False
