"""The two brokers the event path runs on, as the worker tests see them.

A test about events flowing through a worker takes a ``Broker`` and runs on
Redis (the run's private server) and on RabbitMQ (the run's own virtual
host): the same raw messages, the same questions (how many wait, is anything
still held), each answered the broker's own way.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from kombu.connection import Connection

from contact_sync.worker.celery_app import POISON_QUEUE, event_queues, queue_depth, uses_amqp
from tests.factories import QUEUE, envelope, task_body, task_headers
from tests.services import rabbitmqctl

BROKERS = ("redis", "amqp")


@dataclass
class Broker:
    """One broker URL, with raw access of the kind a publisher in any language has."""

    url: str
    _redis: redis.Redis | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "amqp" if uses_amqp(self.url) else "redis"

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.url)
        return self._redis

    def push(
        self,
        body: bytes,
        task: str = "contact_sync.apply_call_completed",
        *,
        content_type: str = "application/json",
    ) -> None:
        """Send one task message with ``body`` as it is, not through Celery.

        Redis: the JSON envelope of docs/celery-message.md pushed on the list.
        RabbitMQ: an AMQP message on the default exchange to the queue, with
        the Celery headers, after declaring the queue as every publisher must.
        """
        if self.kind == "redis":
            self.redis.lpush(QUEUE, envelope(body, task, content_type=content_type))
            return
        with Connection(self.url, transport_options={"confirm_publish": True}) as conn:
            channel = conn.channel()
            queue, _poison = event_queues()
            queue(channel).declare()
            message = channel.prepare_message(
                body,
                content_type=content_type,
                content_encoding="utf-8",
                headers=task_headers(task),
                properties={"delivery_mode": 2},
            )
            channel.basic_publish(message, exchange="", routing_key=QUEUE)

    def push_task(self, args: list[Any], task: str = "contact_sync.apply_call_completed") -> None:
        """Send the message of a task call with positional ``args``."""
        self.push(task_body(args), task)

    def waiting(self) -> int:
        """Messages in the queue that no consumer holds."""
        with Connection(self.url) as conn:
            return queue_depth(conn)

    def held(self) -> int:
        """Messages queued or delivered and not acknowledged yet."""
        if self.kind == "redis":
            return int(self.redis.llen(QUEUE)) + int(self.redis.hlen("unacked"))
        return int(self.rabbit_queues().get(QUEUE, {}).get("messages", 0))

    def drained(self) -> bool:
        """Nothing queued and nothing unacknowledged (acknowledgements come after commits).

        Redis is asked twice a moment apart: a message is briefly in neither
        place between its move off the list and its entry in the unacked hash.
        RabbitMQ counts a message until it is acknowledged.
        """
        if self.kind == "amqp":
            return self.held() == 0
        if self.held():
            return False
        time.sleep(0.1)
        return self.held() == 0

    def rabbit_queues(self) -> dict[str, dict[str, Any]]:
        """RabbitMQ's own account of this virtual host's queues, by name."""
        rows = json.loads(
            rabbitmqctl(
                "list_queues",
                "-q",
                "-p",
                self.vhost,
                "name",
                "type",
                "arguments",
                "messages",
                "consumers",
                "--formatter",
                "json",
            )
            or "[]"
        )
        return {row["name"]: row for row in rows}

    @property
    def vhost(self) -> str:
        return urlsplit(self.url).path.lstrip("/")

    def flush(self) -> None:
        """Nothing of an earlier test left: the database emptied, or the queues purged.

        RabbitMQ's queues are purged, not deleted: kombu shares a producer per
        broker URL across Celery apps in a process and remembers what it
        declared, so it would not declare a deleted queue again, and what it
        published next would be unroutable (acknowledged by the broker, then
        dropped).
        """
        if self.kind == "redis":
            self.redis.flushdb()
            return
        with Connection(self.url) as conn:
            for name in (QUEUE, POISON_QUEUE):
                channel = conn.channel()
                with contextlib.suppress(*conn.channel_errors):  # not declared yet
                    channel.queue_purge(name)
                with contextlib.suppress(*conn.channel_errors, *conn.connection_errors):
                    channel.close()

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def broker_for(request: pytest.FixtureRequest, kind: str, redis_db: int) -> Broker:
    """An emptied broker of ``kind``: Redis database ``redis_db``, or the run's virtual host."""
    if kind == "redis":
        url = re.sub(r"/\d*$", f"/{redis_db}", str(request.getfixturevalue("redis_url")))
    else:
        url = str(request.getfixturevalue("amqp_url"))
    broker = Broker(url)
    broker.flush()
    return broker
