"""The ceiling of ``worker_throughput.py``: a Celery app whose one task does nothing.

Started by the benchmark as ``celery -A _noop_tasks worker ...`` with ``bench/`` on
``PYTHONPATH``. It is configured like the project's worker (JSON only, ``acks_late``, no
results, no events) so the two differ only by what the task does. ``BENCH_BROKER_URL`` names
the broker; ``BENCH_PREFETCH`` the prefetch multiplier; ``BENCH_TRANSPORT=project`` swaps in the
project's Redis transport (bulk take and acknowledgement), so the ceiling can be measured with
whichever transport drains faster.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from contact_sync.worker.celery_app import delivery_options, event_queues, uses_amqp

TASK_NOOP = "bench.noop"

app = Celery("bench_noop", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/11"))
# The worker's own delivery settings and queue (JSON only, acks_late, no results, no events).
app.conf.update(delivery_options(int(os.environ.get("BENCH_PREFETCH", "4"))))
if uses_amqp(app.conf.broker_url):
    # The project's quorum queue, declared exactly as its worker and publishers declare it.
    app.conf.update(task_queues=event_queues())
if os.environ.get("BENCH_TRANSPORT") == "project":
    app.conf.broker_transport = "contact_sync.worker.transport:Transport"


@app.task(name=TASK_NOOP)  # type: ignore[untyped-decorator]  # Celery ships no types
def noop(*_args: Any, **_kwargs: Any) -> None:
    """Take the message and do nothing: what remains is Celery's own cost."""
