"""The project's worker on stock kombu's Redis transport, for ``worker_throughput.py``.

Started by the benchmark as ``celery -A _stock_kombu_app worker ...`` with ``bench/`` on
``PYTHONPATH`` and ``CONTACT_SYNC_*`` naming the database and a ``redis://`` broker. It is the
project's app (``contact_sync.worker.app``: its tasks, the group-commit strategy, the
dead-lettering consumer, the same settings) with one change: kombu's own Redis transport
(``BRPOP``, one round trip to take, one to record, one to acknowledge each message) instead
of the project's, which takes messages in bulk through an in-transit list and acknowledges a
loop turn's at once. The difference between the two runs is the transport's speed alone.
"""

from __future__ import annotations

from contact_sync.worker.app import app
from contact_sync.worker.celery_app import TRANSPORT

if app.conf.broker_transport != TRANSPORT:
    raise SystemExit("_stock_kombu_app compares Redis transports: give it a redis:// broker")
# Transport options it does not know (prefetch_bytes) are ignored by kombu's channel.
app.conf.broker_transport = "redis"

__all__ = ["app"]
