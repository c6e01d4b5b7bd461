"""The one place that configures Celery (serializer, queue, acks, logging).

At-least-once delivery is assumed: ``acks_late`` acknowledges a message only
after its transaction committed, and the inbox turns redeliveries into
no-ops.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from contact_sync.logs import configure_logging
from contact_sync.settings import Settings, get_settings

QUEUE = "contact_sync.events"
TASK_APPLY = "contact_sync.apply_call_completed"
TASK_APPLY_BATCH = "contact_sync.apply_call_completed_batch"
TRANSPORT = "contact_sync.worker.transport:Transport"


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``; tasks live in ``contact_sync.worker.tasks``."""
    celery = Celery(
        "contact_sync", broker=settings.broker_url, include=["contact_sync.worker.tasks"]
    )
    # The visibility timeout must exceed the longest a message may sit
    # prefetched, waiting for a retry countdown, or running: Redis
    # redelivers it after this.
    transport_options: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout_seconds,
        # Each worker looks for messages past their visibility timeout (left by a
        # worker that died, or stranded by a broker restart) every 10 s; kombu
        # 5.7 scans only on every 10th look by default, so they came back up to
        # 100 s late. One scan is one ZRANGE: scan every time.
        "unacked_restore_throttle": 1,
    }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # kombu's Redis transport, with messages taken into an in-transit list
        # instead of popped: a worker killed while taking one cannot lose it.
        celery.conf.broker_transport = TRANSPORT
        transport_options["prefetch_bytes"] = settings.worker_prefetch_bytes
    if settings.broker_url.startswith("filesystem://"):
        # The embedded broker of the demo: message files in one folder, no server.
        folder = Path(settings.broker_folder).resolve()
        (folder / "control").mkdir(parents=True, exist_ok=True)
        transport_options.update(
            data_folder_in=str(folder),
            data_folder_out=str(folder),
            control_folder=str(folder / "control"),
            polling_interval=0.05,
        )
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.worker_prefetch_multiplier,
        broker_transport_options=transport_options,
        task_default_queue=QUEUE,
        task_routes={TASK_APPLY: {"queue": QUEUE}, TASK_APPLY_BATCH: {"queue": QUEUE}},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_consumer="contact_sync.worker.consumer:DeadLetteringConsumer",
    )
    return celery


app = create_app(get_settings())


@setup_logging.connect
def _json_logs(loglevel: Any = "INFO", **_: Any) -> None:
    configure_logging(loglevel or "INFO")
    # Celery's per-task "received" and "succeeded" lines repeat the whole payload (personal
    # data, and large for batches); our own line per event replaces it.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)


@worker_init.connect
def _refuse_an_incompatible_kombu(sender: Any = None, **_: Any) -> None:
    # Before the worker takes a message: one line and exit 6 if kombu lacks a hook the
    # transport needs (worker/kombu_hooks.py says why it refuses rather than falls back).
    if sender is not None and sender.app.conf.broker_transport == TRANSPORT:
        from contact_sync.worker.kombu_hooks import refuse_if_incompatible

        refuse_if_incompatible()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked child must not share the parent's database sockets.
    from contact_sync.worker.runtime import reset_engine

    reset_engine()


@worker_process_shutdown.connect
def _child_gone(pid: int | None = None, **_: Any) -> None:
    import os

    from contact_sync.worker.metrics_server import mark_dead

    mark_dead(pid or os.getpid())
