"""What the worker does differently on RabbitMQ (``CONTACT_SYNC_BROKER_URL=amqp://…``).

The events queue is a quorum queue (``celery_app.event_queues``). It counts
each message's deliveries, so a message that killed its worker process is
recognised by the count the broker hands out with it, not by a database
counter: such a message is parked as ``poison_message`` here, before any
pool process runs it again. What the broker itself dead-lettered after its
own, higher limit arrives on the poison queue, which this consumer also
reads, and is parked the same way. Everything else goes through the task
strategies unchanged (the group commit of ``worker/grouping.py`` included).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from contact_sync.worker.celery_app import POISON_QUEUE, TASK_APPLY, TASK_APPLY_BATCH, settings_of
from contact_sync.worker.consumer import DeadLetteringConsumer
from contact_sync.worker.poison import broker_poison_reason

log = logging.getLogger("contact_sync.worker")


def _call(message: Any, body: Any) -> tuple[Any, Any]:
    """A task message's (args, kwargs): protocol 2 in the body, protocol 1 in a dict."""
    if isinstance(body, dict):
        return body.get("args"), body.get("kwargs")
    args, kwargs, _embed = message.decode()  # its shape was checked by the consumer
    return args, kwargs


def parking_poison(consumer: Any, task: str, inner: Any, limit: int) -> Any:
    """Wrap the strategy ``inner`` of ``task``: poison messages are parked, not run.

    Parking runs in a pool process (the database work stays out of the
    consumer's loop, and retries transient errors like an apply); the message
    is acknowledged after the dead letter is committed, and given back to the
    broker if that fails.
    """
    from contact_sync.worker.tasks import park_poison

    pool = consumer.pool
    connection_errors = consumer.connection_errors

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        why = broker_poison_reason(message.delivery_info, message.headers, limit)
        if why is None:
            return inner(message, body, ack, reject, callbacks, **kw)
        try:
            args, kwargs = _call(message, body)
        except Exception:  # undecodable: the inner strategy raises what the consumer parks
            return inner(message, body, ack, reject, callbacks, **kw)
        headers = message.headers if isinstance(message.headers, dict) else {}
        key = str(headers.get("id") or (body or {}).get("id"))
        log.warning("poison message", extra={"task_id": key, "reason": why})
        pool.apply_async(
            park_poison,
            args=(key, task, args, kwargs, why),
            callback=lambda _: ack(log, connection_errors),
            error_callback=lambda _: reject(log, connection_errors, True),
        )
        return None

    return handle


class Consumer(DeadLetteringConsumer):
    """The dead-lettering consumer, with RabbitMQ's delivery count and poison queue."""

    class Blueprint(DeadLetteringConsumer.Blueprint):
        # Celery adds native delayed delivery (28 quorum queues and their
        # exchanges) whenever it sees a quorum queue. It serves ETA and
        # countdown messages, which this project never sends (transient errors
        # retry in place), so it is left out.
        default_steps: ClassVar[list[str]] = [
            step
            for step in DeadLetteringConsumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Consumed whatever ``--queues`` selected: what lands there must be parked.
        queues = self.app.amqp.queues
        queues.select_add(queues[POISON_QUEUE])

    def update_strategies(self) -> None:
        """Celery's strategies, each behind the broker's poison count."""
        super().update_strategies()
        limit = settings_of(self.app).poison_max_attempts
        for task in (TASK_APPLY, TASK_APPLY_BATCH):
            self.strategies[task] = parking_poison(self, task, self.strategies[task], limit)
