"""What RabbitMQ adds to the event path: quorum queues, confirms, the broker's delivery count.

Every test runs on the run's own virtual host with real workers; the tests of
events flowing through a worker on both brokers are in the other worker
modules.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from fastapi.testclient import TestClient
from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.api import create_app as create_api
from contact_sync.db.tables import dead_letters, delivery_attempts, processed_events
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import (
    DELIVERY_LIMIT,
    POISON_QUEUE,
    QUEUE,
    create_app,
    event_queues,
    queue_depth,
)
from contact_sync.worker.metrics_server import QueueDepth
from contact_sync.worker.poison import poison_text
from contact_sync.worker.publisher import EventPublisher, publish_event
from tests.brokers import Broker, broker_for
from tests.factories import call_event, contact_row, make_contact
from tests.services import rabbitmqctl
from tests.workers import start_worker, stop_worker

pytestmark = pytest.mark.slow
T = TypeVar("T")


def _until(what: str, probe: Callable[[], T], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    broker = broker_for(request, "amqp", redis_db=0)
    yield broker
    broker.flush()
    broker.close()


def _rows(engine: Engine, table: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(table)))


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_the_worker_declares_quorum_queues_and_every_publisher_declares_the_same(
    pg_engine: Engine, pg_team: Team, postgres_url: str, broker: Broker, tmp_path: Path
) -> None:
    worker = start_worker(postgres_url, broker.url, tmp_path / "worker.log")
    app = create_app(Settings(broker_url=broker.url, database_url=postgres_url))
    try:
        queues = _until(
            "the worker consuming both queues",
            lambda: (
                (found := broker.rabbit_queues())
                and all(found.get(name, {}).get("consumers") for name in (QUEUE, POISON_QUEUE))
                and found
            ),
        )
        assert queues[QUEUE]["type"] == "quorum"
        assert {(name, value) for name, _type, value in queues[QUEUE]["arguments"]} == {
            ("x-queue-type", "quorum"),
            ("x-delivery-limit", DELIVERY_LIMIT),
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", POISON_QUEUE),
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
        }
        assert queues[POISON_QUEUE]["type"] == "quorum"
        assert (queues[QUEUE]["consumers"], queues[POISON_QUEUE]["consumers"]) == (1, 1)
        # Celery's native delayed delivery (its celery_delayed_* quorum queues) is left out.
        assert not [name for name in queues if name.startswith("celery_delayed")]

        # Each publisher declares the queue on its own connection; a declaration
        # that differed would be refused (PRECONDITION_FAILED) and nothing sent.
        events = [call_event(pg_team.id, phone=f"+1202555017{n}") for n in range(3)]
        publish_event(events[0], app=app)
        with EventPublisher(app=app, linger_seconds=0) as publisher:
            publisher.publish(events[1])
        path = tmp_path / "events.jsonl"
        path.write_text(json.dumps(events[2]) + "\n")
        cli = subprocess.run(
            [sys.executable, "-m", "contact_sync.cli.main", "publish", str(path), "--quiet"],
            env={**os.environ, "CONTACT_SYNC_BROKER_URL": broker.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        _until("three applied events", lambda: _count(pg_engine, processed_events) == 3)
        assert {row.outcome for row in _rows(pg_engine, processed_events)} == {"applied"}

        with Connection(broker.url) as conn:
            other = Queue(QUEUE, queue_arguments={"x-queue-type": "quorum"})
            with pytest.raises(conn.channel_errors, match="PRECONDITION_FAILED"):
                other(conn.channel()).declare()
    finally:
        app.close()
        stop_worker(worker)


def test_publishes_are_confirmed_so_a_message_the_queue_refuses_raises(
    postgres_url: str, pg_team: Team, broker: Broker
) -> None:
    # A length limit makes the queue refuse publishes (it overflows by rejecting them):
    # without confirms the refused ones would be acknowledged by nobody and simply gone.
    app = create_app(Settings(broker_url=broker.url, database_url=postgres_url))
    policy = ("-p", broker.vhost, "test-cap")
    try:
        publish_event(call_event(pg_team.id, phone="+12025550180"), app=app)  # declares it
        cap = '{"max-length": 1}'
        rabbitmqctl("set_policy", *policy, f"^{QUEUE}$", cap, "--apply-to", "queues")
        sent, refused = 0, None
        for n in range(20):
            try:
                publish_event(call_event(pg_team.id, phone=f"+120255502{n:02d}"), app=app)
            except Exception as error:
                refused = error
                break
            sent += 1
        # kombu gives up after Celery's publish retries and raises the broker's refusal
        assert type(refused).__name__ == "OperationalError"
        assert type(refused.__cause__).__name__ == "MessageNacked"
        assert broker.waiting() == 1 + sent  # every publish that returned is in the queue
    finally:
        rabbitmqctl("clear_policy", *policy)
        app.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def _waiting_backends(dsn: str, mine: int) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> %s",
            (mine,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def test_a_message_that_kills_its_worker_process_is_parked_by_the_broker_delivery_count(
    pg_engine: Engine, pg_team: Team, postgres_url: str, broker: Broker, tmp_path: Path
) -> None:
    limit = 2
    log_path = tmp_path / "worker.log"
    worker = start_worker(
        postgres_url,
        broker.url,
        log_path,
        concurrency=1,
        CONTACT_SYNC_POISON_MAX_ATTEMPTS=str(limit),
    )
    app = create_app(Settings(broker_url=broker.url, database_url=postgres_url))
    contact = make_contact(pg_engine, pg_team.id)
    event = call_event(pg_team.id, contact_id=contact.id, extraction={"tags": ["never"]})
    dsn = postgres_url.replace("+psycopg", "")
    holder = psycopg.connect(dsn)
    try:
        # The contact stays locked, so each delivery waits in its pool process
        # until the test kills that process, as a message that crashes it would.
        holder.execute("SELECT 1 FROM contacts WHERE id = %s FOR UPDATE", (contact.id,))
        publish_event(event, app=app)
        for _ in range(limit):
            [backend] = _until(
                "a delivery waiting on the contact",
                lambda: _waiting_backends(dsn, holder.info.backend_pid),
            )
            [child] = _until("the pool process", lambda: _children(worker.pid))
            os.kill(child, signal.SIGKILL)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        [letter] = _until("the poison dead letter", lambda: _rows(pg_engine, dead_letters))
        holder.rollback()

        assert (letter.reason, letter.event_id, letter.payload) == (
            "poison_message",
            event["event_id"],
            event,
        )
        assert letter.message == poison_text(limit)
        assert _count(pg_engine, delivery_attempts) == 0  # the broker counted, not the database
        assert _count(pg_engine, processed_events) == 0
        assert contact_row(pg_engine, contact.id).version == 1
        _until("the parked message acknowledged", broker.drained)
        assert worker.poll() is None, log_path.read_text()[-3000:]
    finally:
        holder.close()
        app.close()
        stop_worker(worker)


def test_a_message_the_broker_dead_letters_at_its_delivery_limit_is_parked_not_dropped(
    pg_engine: Engine, pg_team: Team, postgres_url: str, broker: Broker, tmp_path: Path
) -> None:
    # x-delivery-limit lies above our own count; what reaches it anyway (returned again
    # and again before any of our workers could count it) goes to the poison queue.
    contact = make_contact(pg_engine, pg_team.id)
    event = call_event(pg_team.id, contact_id=contact.id, extraction={"tags": ["never"]})
    app = create_app(Settings(broker_url=broker.url, database_url=postgres_url))
    try:
        publish_event(event, app=app)
        queue, _poison = event_queues()
        with Connection(broker.url) as conn:
            for _ in range(DELIVERY_LIMIT + 1):
                bound = queue(conn.channel())
                message = _until("a delivery", lambda q=bound: q.get(no_ack=False))
                message.reject(requeue=True)
                bound.channel.close()
            _until("the dead-lettered message", lambda: broker.rabbit_queues()[POISON_QUEUE])
        assert broker.waiting() == 0

        worker = start_worker(postgres_url, broker.url, tmp_path / "worker.log")
        try:
            [letter] = _until("the poison dead letter", lambda: _rows(pg_engine, dead_letters))
        finally:
            stop_worker(worker)
        assert (letter.reason, letter.payload) == ("poison_message", event)
        assert "delivery_limit" in letter.message
        assert contact_row(pg_engine, contact.id).version == 1
        # Counted by the broker itself (a passive declare), not by rabbitmqctl, whose
        # statistics lag by seconds: the parked message is gone from the poison queue.
        with Connection(broker.url) as conn:
            assert queue_depth(conn, POISON_QUEUE) == 0
    finally:
        app.close()


def test_readyz_and_the_depth_metric_read_the_quorum_queue(
    pg_engine: Engine, pg_team: Team, postgres_url: str, broker: Broker
) -> None:
    settings = Settings(broker_url=broker.url, database_url=postgres_url)
    app = create_app(settings)
    try:
        for n in range(3):
            publish_event(call_event(pg_team.id, phone=f"+120255503{n:02d}"), app=app)
        with TestClient(create_api(settings, engine=pg_engine)) as client:
            ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ok",
            "checks": {"database": "ok", "broker": "ok"},
            "queue_depth": 3,
        }
        [metric] = QueueDepth(app, QUEUE).collect()
        assert [sample.value for sample in metric.samples] == [3.0]

        down = settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:1//"})
        with TestClient(create_api(down, engine=pg_engine)) as client:
            unready = client.get("/readyz")
        assert unready.status_code == 503
        assert unready.json()["checks"]["broker"].startswith("unreachable")
    finally:
        app.close()
