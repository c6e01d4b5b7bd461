"""``/readyz``: the database and the broker probed once for many callers.

A probe of a broker that is down takes its timeout (~2 s). Probed on every
call, each call held one of the server's worker threads for that long, so a
few dozen readiness checks left none for the API's own requests. Here an
answer is kept for a few seconds, and while a probe runs every caller awaits
that same probe on the event loop: one thread (the probe's own) is busy,
however many callers there are.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Engine, text

# Every step of a broker probe gives up after this long: a broker that accepts the
# connection and then says nothing would otherwise hold the probe forever.
PROBE_TIMEOUT_SECONDS = 2.0

Answer = tuple[bool, dict[str, Any]]


def broker_check(url: str) -> tuple[str, int | None]:
    """Whether the broker answers, and how many messages wait in the events queue.

    The depth is read as the worker's metrics read it: Redis's list length,
    or RabbitMQ's passive declaration of the quorum queue.
    """
    from kombu.connection import Connection

    from contact_sync.worker.celery_app import queue_depth, uses_amqp

    timeout = PROBE_TIMEOUT_SECONDS
    options: dict[str, Any] = {}
    if uses_amqp(url):
        options = {"read_timeout": timeout, "write_timeout": timeout}
    elif url.startswith(("redis://", "rediss://")):
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    try:
        with Connection(  # type: ignore[no-untyped-call]
            url, connect_timeout=timeout, transport_options=options
        ) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            depth = queue_depth(conn)
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return f"unreachable: {type(exc).__name__}", None
    return "ok", depth


def probe(engine: Engine, broker_url: str) -> Answer:
    """Whether both answer, and the body ``/readyz`` reports."""
    broker, depth = broker_check(broker_url)
    checks = {"database": "ok", "broker": broker}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks, "queue_depth": depth}
    return ready, body


class Readiness:
    """The last answer of ``probe`` for ``ttl`` seconds; at most one probe runs at a time."""

    def __init__(self, probe: Callable[[], Answer], ttl: float) -> None:
        self._probe = probe
        self._ttl = ttl
        self._lock = threading.Lock()
        self._answer: Answer | None = None
        self._expires = 0.0
        self._running: Future[Answer] | None = None

    async def answer(self) -> Answer:
        """The cached answer while it is fresh, else the one of the probe running (or started)."""
        with self._lock:
            if self._answer is not None and time.monotonic() < self._expires:
                return self._answer
            if self._running is None:
                self._running = Future()
                threading.Thread(
                    target=self._run, args=(self._running,), name="readyz-probe", daemon=True
                ).start()
            running = self._running
        # Awaited on the event loop: a waiting caller holds no thread.
        return await asyncio.wrap_future(running)

    def _run(self, future: Future[Answer]) -> None:
        try:
            answer = self._probe()
        except BaseException as exc:  # handed to every waiting caller
            with self._lock:
                self._running = None
            future.set_exception(exc)
            return
        with self._lock:
            self._answer = answer
            self._expires = time.monotonic() + self._ttl
            self._running = None
        future.set_result(answer)
