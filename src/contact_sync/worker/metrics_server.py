"""Prometheus metrics of a worker node, served from its main process.

Celery's prefork children count events in their own memory, so the
counters use prometheus-client's multiprocess mode: each process writes to
``PROMETHEUS_MULTIPROC_DIR`` and the main process sums them at scrape time.
The queue depth is read from the broker at scrape time (Redis: the list's
length; RabbitMQ: a passive declaration's message count), the open dead
letters from the database (``metrics.OpenDeadLetters``). Importing this
module imports prometheus-client, so the CLI sets the directory first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class QueueDepth(Collector):
    """``contact_sync_queue_depth``: messages waiting in the events queue."""

    def __init__(self, app: Any, queue: str) -> None:
        self.app = app
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "contact_sync_queue_depth", "Messages waiting in the events queue.", labels=["queue"]
        )
        from contact_sync.worker.celery_app import queue_depth

        try:
            with self.app.connection_for_read() as conn:
                depth = float(queue_depth(conn, self.queue))
        except Exception:  # a scrape must not fail because the broker is away
            depth = float("nan")
        gauge.add_metric([self.queue], float(depth))
        yield gauge


def serve(port: int, app: Any, queue: str, host: str = "127.0.0.1") -> None:
    """Start the metrics HTTP server on ``host:port`` in a background thread.

    Loopback unless told otherwise: prometheus-client binds every interface by
    default, which publishes the node's counters to whoever reaches the machine.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from contact_sync.ops.metrics import OpenDeadLetters
    from contact_sync.worker.celery_app import settings_of
    from contact_sync.worker.runtime import get_engine

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(QueueDepth(app, queue))
    settings = settings_of(app)
    registry.register(OpenDeadLetters(lambda: get_engine(settings)))
    start_http_server(port, addr=host, registry=registry)


def mark_dead(pid: int) -> None:
    """Let a finished child's live gauges go (counters keep their totals)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
