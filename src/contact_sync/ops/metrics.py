"""What the service did, for Prometheus: the worker's counters, the API's, and open dead letters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from contact_sync.calls.events import Reason

EVENTS = Counter(
    "contact_sync_events_total",
    "Events handled by outcome (applied, no_change, duplicate, dead_lettered).",
    ["outcome"],
)
CONFLICT_RETRIES = Counter(
    "contact_sync_conflict_retries_total",
    "Transactions retried after a transient database error (conflict, deadlock, outage).",
)
DEFERRED_EVENTS = Counter(
    "contact_sync_deferred_events_total",
    "Events left by a first pass because another transaction held their contact or number,"
    " applied in a second unit of work after it.",
)
APPLY_SECONDS = Histogram(
    "contact_sync_apply_seconds",
    "Time to apply one message (one event or one batch).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

log = logging.getLogger("contact_sync.ops.metrics")


class OpenDeadLetters(Collector):
    """``contact_sync_dead_letters_open{reason}``: letters neither replayed nor discarded.

    Read from the database at scrape time, so every worker and API process
    reports the same figure; the answer is kept ``cache_seconds`` so that
    scrapes from several Prometheus servers cost at most one GROUP BY in that
    time. Every reason code is reported (0 when none is open): a bounded,
    stable label set. When the database cannot answer, the metric has no
    samples (alert on its absence) rather than stale or made-up ones.
    """

    def __init__(
        self,
        engine: Callable[[], Engine],
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._counts: dict[str, int] = {}

    def _current(self) -> dict[str, int] | None:
        from contact_sync.db.unit_of_work import unit_of_work
        from contact_sync.ops.dead_letters import count_open_by_reason

        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.cache_seconds:
                try:
                    # A scrape is an entry point: it reads in a unit of work of its own.
                    with unit_of_work(self.engine()) as uow:
                        self._counts = count_open_by_reason(uow.conn)
                except Exception as error:  # a scrape must not fail because the database is away
                    log.warning("open dead letters unreadable", extra={"error": repr(error)[:300]})
                    self._read_at = None
                    return None
                self._read_at = now
            return self._counts

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "contact_sync_dead_letters_open",
            "Dead letters neither replayed nor discarded, by reason code.",
            labels=["reason"],
        )
        counts = self._current()
        if counts is not None:
            for reason in sorted({*get_args(Reason), *counts}):
                gauge.add_metric([reason], float(counts.get(reason, 0)))
        yield gauge
