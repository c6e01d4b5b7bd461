"""Counters of what the worker did (Prometheus)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "contact_sync_events_total",
    "Events handled by outcome (applied, no_change, duplicate, dead_lettered).",
    ["outcome"],
)
CONFLICT_RETRIES = Counter(
    "contact_sync_conflict_retries_total",
    "Transactions retried after a transient database error (conflict, deadlock, outage).",
)
APPLY_SECONDS = Histogram(
    "contact_sync_apply_seconds",
    "Time to apply one message (one event or one batch).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
