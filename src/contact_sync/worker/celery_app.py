"""The one place that configures Celery (serializer, queue, acks, logging).

At-least-once delivery is assumed: ``acks_late`` acknowledges a message only
after its transaction committed, and the inbox turns redeliveries into
no-ops.

Two brokers are supported. Redis (the default) keeps the queue as a list and
redelivers after a visibility timeout; RabbitMQ (``amqp://``) keeps it as a
quorum queue: replicated, acknowledged by the broker itself, counting each
message's deliveries (see ``worker/amqp.py``).
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from contact_sync.logs import configure_logging
from contact_sync.settings import Settings

QUEUE = "contact_sync.events"
TASK_APPLY = "contact_sync.apply_call_completed"
TASK_APPLY_BATCH = "contact_sync.apply_call_completed_batch"
TRANSPORT = "contact_sync.worker.transport:Transport"

# RabbitMQ only: where the broker itself dead-letters a message returned more than
# DELIVERY_LIMIT times; the worker consumes it and parks each message as poison.
POISON_QUEUE = "contact_sync.events.poison"
# Our own count parks a message that killed its worker ``poison_max_attempts`` times
# (3 by default) first; the broker's limit lies well above it and catches only what
# never reached our count (a message returned by many restarts while prefetched), and
# what it catches is dead-lettered into POISON_QUEUE, never dropped. A queue's
# arguments cannot change once it exists, so this is a constant, not a setting.
DELIVERY_LIMIT = 20
QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DELIVERY_LIMIT,
    "x-dead-letter-exchange": "",  # the default exchange: routes to the queue named below
    "x-dead-letter-routing-key": POISON_QUEUE,
    # at-least-once dead-lettering keeps the message in this queue until the poison
    # queue confirmed it (at-most-once, the default, may lose it on the way); RabbitMQ
    # requires reject-publish overflow for it (no length limit is set, so no publish is
    # ever refused for that).
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
_AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def uses_amqp(broker_url: str) -> bool:
    """Whether ``broker_url`` is RabbitMQ's (AMQP 0.9.1)."""
    return broker_url.startswith(_AMQP_SCHEMES)


def event_queues() -> tuple[Queue, Queue]:
    """The RabbitMQ declarations of the events queue and its poison queue.

    The worker and every publisher declare the queue with exactly these
    arguments: RabbitMQ refuses a declaration that differs from the existing
    queue (PRECONDITION_FAILED), so they live in one place.
    """
    exchange = Exchange(QUEUE, type="direct", durable=True)  # type: ignore[no-untyped-call]
    return (
        Queue(  # type: ignore[no-untyped-call]
            QUEUE, exchange, routing_key=QUEUE, durable=True, queue_arguments=QUEUE_ARGUMENTS
        ),
        Queue(  # type: ignore[no-untyped-call]
            POISON_QUEUE,
            exchange,
            routing_key=POISON_QUEUE,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        ),
    )


def queue_depth(connection: Connection, queue: str = QUEUE) -> int:
    """Messages waiting in ``queue`` (not those delivered and unacknowledged).

    Redis: the list's length. RabbitMQ: a passive declaration's message
    count, which neither creates the queue nor needs its arguments; a queue
    nobody has declared yet holds nothing.
    """
    channel: Any = connection.channel()  # type: ignore[no-untyped-call]
    try:
        if connection.transport.driver_type != "amqp":
            return int(channel.client.llen(queue))
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except connection.channel_errors:  # NOT_FOUND: the broker closed this channel
            return 0
    finally:
        channel.close()


class ContactSyncCelery(Celery):  # type: ignore[misc]
    """Celery, whose worker program writes JSON lines only (``worker/output.py``)."""

    @cached_property
    def Worker(self) -> Any:  # noqa: N802 (Celery's name)
        return self.subclass_with_self("contact_sync.worker.output:JsonWorker")


SETTINGS_KEY = "contact_sync_settings"


def _redis_options(celery: Celery, settings: Settings) -> dict[str, Any]:
    """kombu's Redis transport, with messages taken into an in-transit list
    instead of popped: a worker killed while taking one cannot lose it."""
    celery.conf.broker_transport = TRANSPORT
    return {
        # The visibility timeout must exceed the longest a message may sit
        # prefetched, waiting for a retry countdown, or running: Redis
        # redelivers it after this.
        "visibility_timeout": settings.visibility_timeout_seconds,
        # Each worker looks for messages past their visibility timeout (left by
        # a worker that died, or stranded by a broker restart) every 10 s; kombu
        # 5.7 scans only on every 10th look by default, so they came back up to
        # 100 s late. One scan is one ZRANGE: scan every time.
        "unacked_restore_throttle": 1,
        "prefetch_bytes": settings.worker_prefetch_bytes,
    }


def _amqp_options(celery: Celery) -> dict[str, Any]:
    """Every publish waits for the broker's confirmation that the queue took
    it (replicated, for a quorum queue): a refused or lost publish raises
    instead of vanishing. RabbitMQ needs no visibility timeout (it redelivers
    when the consumer's channel closes) and bounds prefetch per consumer, so
    the Redis options do not apply."""
    celery.conf.update(
        task_queues=event_queues(),
        # Quorum queues refuse global QoS; Celery sees the quorum queue and
        # sets the prefetch per consumer (the default, kept explicit).
        worker_detect_quorum_queues=True,
        # The same consumer, with the broker's delivery count for poison
        # messages and the poison queue consumed (worker/amqp.py).
        worker_consumer="contact_sync.worker.amqp:Consumer",
    )
    return {"confirm_publish": True}


def _folder_options(settings: Settings) -> dict[str, Any]:
    """The embedded broker of the demo: message files in one folder, no server."""
    folder = Path(settings.broker_folder).resolve()
    (folder / "control").mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.05,
    }


def _transport_options(celery: Celery, settings: Settings) -> dict[str, Any]:
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        return _redis_options(celery, settings)
    if uses_amqp(url):
        return _amqp_options(celery)
    if url.startswith("filesystem://"):
        return _folder_options(settings)
    return {}


def delivery_options(prefetch_multiplier: int) -> dict[str, Any]:
    """How the worker takes, acknowledges and reports its messages (JSON only, late
    acknowledgement, no results, no events) on ``QUEUE``: the Celery settings of the contract.

    The benchmark's peer apps (``bench/_noop_tasks.py``, ``bench/_naive_tasks.py``) use them
    too, so that they differ from the worker only by what their task does.
    """
    return {
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": prefetch_multiplier,
        "task_default_queue": QUEUE,
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def create_app(settings: Settings) -> Celery:
    """The one way to build the Celery app: from ``settings``, with the two tasks registered.

    Nothing is read from the environment here: the CLI builds its app from
    the settings it parsed, ``contact_sync.worker.app`` from the environment.
    The settings travel with the app (``settings_of``) to its tasks.
    """
    from contact_sync.worker.tasks import register_tasks

    celery = ContactSyncCelery("contact_sync", broker=settings.broker_url)
    celery.conf.update(
        worker_consumer="contact_sync.worker.consumer:DeadLetteringConsumer",
        **{SETTINGS_KEY: settings},
    )
    transport_options = _transport_options(celery, settings)
    celery.conf.update(
        **delivery_options(settings.worker_prefetch_multiplier),
        result_serializer="json",
        broker_transport_options=transport_options,
        task_routes={TASK_APPLY: {"queue": QUEUE}, TASK_APPLY_BATCH: {"queue": QUEUE}},
        worker_hijack_root_logger=False,
        # Remote control (inspect, revoke, shutdown, ...) is consumed from the broker,
        # where any publisher can broadcast: off unless ops opt in (README, "Security").
        worker_enable_remote_control=settings.worker_remote_control,
    )
    register_tasks(celery)
    return celery


def settings_of(celery: Celery) -> Settings:
    """The settings ``celery`` was built from (by ``create_app``)."""
    settings = celery.conf.get(SETTINGS_KEY)
    if not isinstance(settings, Settings):
        raise TypeError("this Celery app was not built by contact_sync's create_app")
    return settings


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
    from contact_sync.worker.runtime import reset_engine, settle_collector

    reset_engine()
    settle_collector()  # start-up objects frozen, young collections rarer (worker/runtime.py)


@worker_process_shutdown.connect
def _child_gone(pid: int | None = None, **_: Any) -> None:
    import os

    from contact_sync.worker.metrics_server import mark_dead

    mark_dead(pid or os.getpid())
