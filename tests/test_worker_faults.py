"""Regressions found by the fault-injection harness (``bench/chaos.py``).

What is about events through a worker runs on Redis and RabbitMQ; what is
about the Redis transport's own lists and hashes runs on Redis.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Message
from kombu.asynchronous.timer import Timer
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import create_team
from contact_sync.clock import utcnow
from contact_sync.db.engine import make_engine
from contact_sync.db.tables import dead_letters, processed_events
from contact_sync.ops.dead_letters import record
from contact_sync.settings import Settings
from contact_sync.worker import runtime
from contact_sync.worker.celery_app import create_app
from contact_sync.worker.consumer import DeadLetteringConsumer
from contact_sync.worker.publisher import EventPublisher
from tests.brokers import BROKERS, Broker, broker_for
from tests.factories import call_event, task_body, task_envelope, task_headers
from tests.workers import start_worker, stop_worker

QUEUE = "contact_sync.events"
BROKER_DB = 10


@pytest.fixture
def broker(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(params=BROKERS)
def any_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    broker = broker_for(request, request.param, BROKER_DB)
    yield broker
    broker.close()


@pytest.fixture
def worker(
    pg_engine: Engine, postgres_url: str, any_broker: Broker, tmp_path: Path
) -> Iterator[None]:
    process = start_worker(postgres_url, any_broker.url, tmp_path / "worker.log")
    yield
    stop_worker(process)


def _wait_for_row(engine: Engine, stmt: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(stmt).one_or_none()
        if row is not None:
            return row
        time.sleep(0.1)
    return None


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_a_message_for_an_unknown_task_is_parked_with_its_event(
    pg_engine: Engine, any_broker: Broker
) -> None:
    # Celery hands the consumer no body for a protocol-2 message of an unknown task: the dead
    # letter held {"event": null, "body": null}, and the acknowledged event was gone.
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Typo in the task name")
    event = call_event(team.id, phone="+12025550123")
    any_broker.push_task([event], "contact_sync.apply_call_complete")

    letter = _wait_for_row(pg_engine, select(dead_letters), timeout=60)

    assert letter is not None
    assert (letter.reason, letter.event_id, letter.team_id) == (
        "invalid_payload",
        event["event_id"],
        team.id,
    )
    assert letter.payload["task"] == "contact_sync.apply_call_complete"
    assert letter.payload["event"] == event
    assert letter.payload["body"][0] == [event]


@pytest.mark.slow
def test_a_message_stranded_past_the_visibility_timeout_comes_back_within_seconds(
    pg_engine: Engine, postgres_url: str, broker: str, tmp_path: Path
) -> None:
    # A message a dead worker (or a Redis restart) left in the unacknowledged hash is
    # restored by a live worker's periodic scan. kombu 5.7 scans on every 10th look only
    # (every 100 s): with the shortest visibility timeout, 60 s, it came back after 160 s.
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Stranded")
    event = call_event(team.id, phone="+12025550124")
    process = start_worker(
        postgres_url,
        broker,
        tmp_path / "worker.log",
        CONTACT_SYNC_VISIBILITY_TIMEOUT_SECONDS="60",
    )
    try:
        # As a worker leaves a message it took and never acknowledged: past its visibility
        # timeout 5 s from now, after the new worker's start-up scan.
        envelope = json.loads(task_envelope([event], "contact_sync.apply_call_completed"))
        tag = envelope["properties"]["delivery_tag"]
        client = redis.Redis.from_url(broker)
        client.hset("unacked", tag, json.dumps([envelope, "", QUEUE]))
        client.zadd("unacked_index", {tag: time.time() - 60 + 5})

        applied = _wait_for_row(
            pg_engine,
            select(processed_events).where(processed_events.c.event_id == event["event_id"]),
            timeout=30,  # 5 s to become visible, then at most one 10 s scan period
        )

        assert applied is not None, (tmp_path / "worker.log").read_text()[-3000:]
        assert applied.outcome == "applied"
        # Acknowledged after the commit the test saw, a moment later on a loaded machine.
        deadline = time.monotonic() + 10
        while client.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hlen("unacked") == 0
    finally:
        stop_worker(process)


# --- a worker killed while it waits for a message ------------------------------------------


@pytest.mark.slow
def test_messages_published_as_a_waiting_worker_is_killed_are_not_lost(
    pg_engine: Engine, postgres_url: str, broker: str, tmp_path: Path
) -> None:
    # A SIGKILLed process keeps its sockets for the 10-30 ms its exit takes, and Redis answered
    # the BRPOP the dead worker had left waiting with the next message published: popped, sent
    # to a dead process, gone. Taken into an in-transit list instead, it comes back.
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Killed while waiting")
    events = [call_event(team.id, phone=f"+1202555013{n}") for n in range(5)]
    doomed = subprocess.Popen(
        [sys.executable, "-m", "contact_sync.cli.main", "worker", "--concurrency", "1"],
        env={
            **os.environ,
            "CONTACT_SYNC_DATABASE_URL": postgres_url,
            "CONTACT_SYNC_BROKER_URL": broker,
        },
        stdout=(tmp_path / "doomed.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while b' ready."' not in (tmp_path / "doomed.log").read_bytes():
        assert time.monotonic() < deadline
        assert doomed.poll() is None
        time.sleep(0.05)
    client = redis.Redis.from_url(broker)
    envelopes = [task_envelope([event], "contact_sync.apply_call_completed") for event in events]

    def waiting() -> bool:  # the worker's blocking take is outstanding in Redis
        return any(
            "b" in c.get("flags", "") and c.get("db") == str(BROKER_DB)
            for c in client.client_list()
        )

    deadline = time.monotonic() + 30
    while not waiting():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    doomed.send_signal(signal.SIGKILL)
    for envelope in envelopes:
        client.lpush(QUEUE, envelope)
    doomed.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(doomed.pid, signal.SIGKILL)  # its orphaned pool child

    survivor = start_worker(postgres_url, broker, tmp_path / "survivor.log")
    try:
        ids = [event["event_id"] for event in events]
        stmt = select(func.count()).select_from(processed_events)
        deadline = time.monotonic() + 90  # the dead worker's heartbeat lapses, then a scan
        applied = 0
        while applied < len(ids) and time.monotonic() < deadline:
            with pg_engine.connect() as conn:
                applied = conn.execute(stmt.where(processed_events.c.event_id.in_(ids))).scalar()
            time.sleep(0.2)
        assert applied == len(ids), (tmp_path / "survivor.log").read_text()[-3000:]
    finally:
        stop_worker(survivor)


# --- the consumer while PostgreSQL restarts ---------------------------------------------


class _Delivered(Message):  # type: ignore[misc]
    """A message as the consumer gets it; records whether it was acknowledged."""

    acked = False

    def ack(self, multiple: bool = False) -> None:
        self.acked = True


def _consumer() -> DeadLetteringConsumer:
    """The consumer's handlers alone, on an app (they read its settings), not started."""
    consumer = object.__new__(DeadLetteringConsumer)
    consumer.app = create_app(Settings())
    consumer.timer = Timer()  # the event loop's timer in a worker; run by hand here
    return consumer


def _unknown_task_message(event: dict[str, Any]) -> _Delivered:
    return _Delivered(
        body=task_body([event]),
        content_type="application/json",
        content_encoding="utf-8",
        headers=task_headers("contact_sync.no_such_task"),
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _due(timer: Timer) -> Any:
    """The one call ``timer`` holds, taken off it as the event loop takes what is due."""
    (scheduled,) = timer.queue
    timer.clear()
    return scheduled


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker's engine points at a port nothing listens on, as during a restart."""
    unreachable = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/none?connect_timeout=2"
    )
    monkeypatch.setattr(runtime, "_engine", unreachable)
    yield
    unreachable.dispose()


@pytest.mark.usefixtures("database_down")
def test_an_undeliverable_message_the_database_cannot_take_now_is_parked_later(
    monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    # The consumer runs in the worker's main process: a database error while parking a
    # message raised through Celery's consumer ("Unrecoverable error") and the whole worker
    # exited, stranding every message it held, during each PostgreSQL restart. Then the
    # message was left unacknowledged for the broker to deliver again, which RabbitMQ never
    # does while the channel lives: the chaos run ended with it held, never parked.
    consumer = _consumer()
    message = _unknown_task_message({"event_id": "evt_later"})
    unknown: list[object] = []
    monkeypatch.setattr(
        "celery.signals.task_unknown.send", lambda **kw: unknown.append(kw["message"])
    )

    consumer.on_unknown_task(None, message, KeyError("contact_sync.no_such_task"))

    assert not message.acked
    assert unknown == []  # sent once parked, not before
    first = _due(consumer.timer)
    assert 0.5 < first.eta - time.monotonic() <= 1.0  # a PostgreSQL restart takes ~1 s

    first.entry()  # the database is still down: the next try waits longer
    assert not message.acked
    second = _due(consumer.timer)
    assert 1.5 < second.eta - time.monotonic() <= 2.0

    monkeypatch.setattr(runtime, "_engine", pg_engine)  # back
    second.entry()
    assert message.acked
    assert unknown == [message]
    assert list(consumer.timer.queue) == []
    with pg_engine.connect() as conn:
        assert conn.execute(select(dead_letters.c.event_id)).scalars().all() == ["evt_later"]


@pytest.mark.usefixtures("database_down")
def test_an_undeliverable_message_on_a_closed_channel_is_left_to_the_broker() -> None:
    # Its channel closed, the broker delivers the message again; a park of this copy, and
    # its acknowledgement on the dead channel, would leave a second dead letter.
    consumer = _consumer()
    message = _unknown_task_message({"event_id": "evt_redelivered"})
    message.channel = type("ClosedChannel", (), {"is_open": False})()

    consumer.on_unknown_task(None, message, KeyError("contact_sync.no_such_task"))

    assert not message.acked
    assert list(consumer.timer.queue) == []


def test_an_undeliverable_message_is_parked_then_acknowledged(
    monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    monkeypatch.setattr(runtime, "_engine", pg_engine)
    consumer = _consumer()
    message = _unknown_task_message({"event_id": "evt_parked"})

    consumer.on_unknown_task(None, message, KeyError("contact_sync.no_such_task"))

    assert message.acked
    with pg_engine.connect() as conn:
        letter = conn.execute(select(dead_letters)).one()
    assert (letter.event_id, letter.reason) == ("evt_parked", "invalid_payload")


def test_an_undeliverable_message_is_parked_on_a_connection_a_restart_closed(
    monkeypatch: pytest.MonkeyPatch, pg_engine: Engine, postgres_url: str
) -> None:
    # The worker's engine does not test pooled connections before use: after a PostgreSQL
    # restart the first park failed on the closed one, and the message waited a whole
    # visibility timeout for its next delivery.
    engine = make_engine(postgres_url, pool_size=2, pre_ping=False)
    with engine.connect() as conn:  # pooled, then closed by the server
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with pg_engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid or 0)})")
    monkeypatch.setattr(runtime, "_engine", engine)
    consumer = _consumer()
    message = _unknown_task_message({"event_id": "evt_after_restart"})

    consumer.on_unknown_task(None, message, KeyError("contact_sync.no_such_task"))

    assert message.acked
    with pg_engine.connect() as conn:
        assert conn.execute(select(dead_letters.c.event_id)).scalars().all() == [
            "evt_after_restart"
        ]
    engine.dispose()


# --- the publisher while Redis restarts ---------------------------------------------------


class _Redis:
    """A private redis-server that the test can stop and start again on the same port."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        # Every write synced before it is acknowledged, so a SIGKILL loses nothing acknowledged.
        self.command += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp)]
        self.process: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.client.ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)

    def queued_events(self) -> list[str]:
        events = []
        for raw in self.client.lrange(QUEUE, 0, -1):
            body = json.loads(base64.b64decode(json.loads(raw)["body"]))
            events += [event["event_id"] for event in body[0][0]]
        return events


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[_Redis]:
    server = _Redis(tmp_path)
    server.start()
    yield server
    server.client.close()
    server.stop()


def _publisher(server: _Redis, **options: Any) -> tuple[Celery, EventPublisher]:
    app = create_app(Settings(broker_url=f"redis://127.0.0.1:{server.port}/0"))
    return app, EventPublisher(app=app, validate_events=False, **options)


def test_a_batch_the_broker_refused_on_the_linger_timer_is_sent_once_it_is_back(
    private_redis: _Redis,
) -> None:
    # The timer's flush took the events out of the buffer before sending: when Redis was
    # restarting the send raised in the timer thread, and the events were gone.
    app, publisher = _publisher(private_redis, linger_seconds=0.05)
    try:
        publisher.publish({"event_id": "evt_warmup"})
        publisher.flush()
        private_redis.stop()
        for n in range(3):
            publisher.publish({"event_id": f"evt_{n}"})
        time.sleep(1.5)  # the timer fired and the broker refused
        private_redis.start()
        deadline = time.monotonic() + 30
        while len(private_redis.queued_events()) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(private_redis.queued_events()) == ["evt_0", "evt_1", "evt_2", "evt_warmup"]
        assert publisher.events_sent == 4
    finally:
        publisher.close()
        app.close()


def test_a_full_batch_the_broker_refused_stays_buffered_for_the_next_flush(
    private_redis: _Redis,
) -> None:
    app, publisher = _publisher(private_redis, max_batch=2, linger_seconds=0)
    try:
        publisher.publish({"event_id": "evt_warmup"})
        publisher.flush()
        private_redis.stop()
        publisher.publish({"event_id": "evt_a"})
        with pytest.raises(Exception):  # noqa: B017, PT011 (kombu raises one of many kinds)
            publisher.publish({"event_id": "evt_b"})  # the batch is full: sent, refused
        with pytest.raises(Exception):  # noqa: B017, PT011
            publisher.publish({"event_id": "evt_c"})
        private_redis.start()
        assert publisher.flush() == 3
        queued = private_redis.queued_events()
        assert sorted(queued) == ["evt_a", "evt_b", "evt_c", "evt_warmup"]
        assert private_redis.client.llen(QUEUE) == 3  # chunks of at most max_batch events
    finally:
        publisher.close()
        app.close()


def test_only_messages_of_dead_consumers_are_taken_back_from_transit(
    private_redis: _Redis,
) -> None:
    app = create_app(Settings(broker_url=f"redis://127.0.0.1:{private_redis.port}/0"))
    client = private_redis.client
    client.lpush(QUEUE, "taken by a dead consumer", "taken by a live one")
    client.lmove(QUEUE, f"{QUEUE}.transit.dead", "RIGHT", "LEFT")
    client.lmove(QUEUE, f"{QUEUE}.transit.live", "RIGHT", "LEFT")
    client.set(f"{QUEUE}.transit.live.alive", 1, ex=30)
    try:
        with app.connection_for_read() as conn:
            channel = conn.channel()
            channel.basic_consume(QUEUE, False, lambda message: None, "chaos")

            assert channel.reclaim_orphans() == 1

        assert client.lrange(QUEUE, 0, -1) == [b"taken by a dead consumer"]
        assert client.lrange(f"{QUEUE}.transit.live", 0, -1) == [b"taken by a live one"]
        assert not client.exists(f"{QUEUE}.transit.dead")
    finally:
        app.close()


def _app_sending(server: _Redis, events: int, **settings: Any) -> Celery:
    """An app on ``server`` that has queued ``events`` one-event messages."""
    app = create_app(Settings(broker_url=f"redis://127.0.0.1:{server.port}/0", **settings))
    for n in range(events):
        app.send_task("contact_sync.apply_call_completed", args=[{"event_id": f"evt_{n}"}])
    return app


def _where(client: Any) -> tuple[int, int, int]:
    """(queued, unacknowledged, in transit) message counts."""
    transit = [k for k in client.keys(f"{QUEUE}.transit.*") if not k.endswith(b".alive")]
    return client.llen(QUEUE), client.hlen("unacked"), sum(client.llen(k) for k in transit)


def test_a_message_taken_is_in_transit_until_recorded_as_unacknowledged(
    private_redis: _Redis,
) -> None:
    app = create_app(Settings(broker_url=f"redis://127.0.0.1:{private_redis.port}/0"))
    client = private_redis.client
    seen: list[tuple[int, int, int]] = []

    def received(body: Any, message: Any) -> None:
        seen.append(_where(client))
        message.ack()

    try:
        app.send_task("contact_sync.apply_call_completed", args=[{"event_id": "evt_1"}])
        with app.connection_for_read() as conn:
            queue = app.amqp.queues[QUEUE]
            with conn.Consumer([queue], callbacks=[received], accept=["json"]):
                conn.drain_events(timeout=10)
        # Out of the queue, never nowhere: in transit (or already recorded) while the
        # consumer works on it, and gone from Redis once acknowledged.
        [(queued, unacked, in_transit)] = seen
        assert queued == 0
        assert unacked + in_transit == 1
        assert _where(client) == (0, 0, 0)
    finally:
        app.close()


def test_messages_are_taken_in_bulk_up_to_the_free_prefetch_and_always_somewhere(
    private_redis: _Redis,
) -> None:
    app = _app_sending(private_redis, 12)
    client = private_redis.client
    seen: list[tuple[int, int, int]] = []
    messages: list[Any] = []

    def received(body: Any, message: Any) -> None:
        seen.append(_where(client))
        messages.append(message)

    try:
        with app.connection_for_read() as conn:
            queue = app.amqp.queues[QUEUE]
            with conn.Consumer([queue], callbacks=[received], accept=["json"]) as consumer:
                consumer.qos(prefetch_count=5)
                conn.drain_events(timeout=10)
                # One read took five (the free prefetch): none is lost if we die now.
                assert len(messages) == 5
                assert all(sum(where) == 12 for where in seen)
                assert _where(client) == (7, 5, 0)
                for message in messages:
                    message.ack()
                assert _where(client) == (7, 0, 0)
    finally:
        app.close()


def test_two_deliveries_of_a_bad_event_parked_at_once_leave_one_dead_letter(
    pg_engine: Engine,
) -> None:
    # Both transactions looked for an open dead letter, found none (the other's was not
    # committed yet) and added one each: the harness saw two letters for one event.
    payload = {"event_id": "evt_twice_bad", "schema_version": 2}

    def park(conn: Any) -> None:
        record(
            conn,
            payload=payload,
            reason="unsupported_schema_version",
            message="schema_version 2 is not supported",
            event_id="evt_twice_bad",
            team_id=None,
            now=utcnow(),
        )

    first = pg_engine.connect()
    first.begin()
    park(first)
    second = threading.Thread(target=lambda: _in_transaction(pg_engine, park))
    second.start()
    time.sleep(0.5)  # the second transaction is parking the same event meanwhile
    first.commit()
    first.close()
    second.join(timeout=30)

    with pg_engine.connect() as conn:
        letters = conn.execute(
            select(dead_letters).where(dead_letters.c.event_id == "evt_twice_bad")
        ).all()
    assert [letter.attempts for letter in letters] == [2]


def _in_transaction(engine: Engine, work: Any) -> None:
    with engine.begin() as conn:
        work(conn)


def test_prefetch_is_bounded_in_bytes_as_well_as_in_messages(private_redis: _Redis) -> None:
    settings = Settings(
        broker_url=f"redis://127.0.0.1:{private_redis.port}/0", worker_prefetch_bytes=64 * 1024
    )
    app = create_app(settings)
    client = private_redis.client
    messages: list[Any] = []
    try:
        big = {"event_id": "evt_big", "notes": "x" * 20_000}  # about 27 KB once encoded
        for _ in range(6):
            app.send_task("contact_sync.apply_call_completed", args=[big])
        with app.connection_for_read() as conn:
            queue = app.amqp.queues[QUEUE]
            with conn.Consumer([queue], callbacks=[lambda _b, m: messages.append(m)]) as consumer:
                consumer.qos(prefetch_count=100)
                conn.drain_events(timeout=10)
                # 100 slots are free, but one take stops at what fits 64 KB ...
                assert len(messages) == 2
                conn.drain_events(timeout=10)
                # ... and the next message, taken while under it, is the last until an ack.
                assert len(messages) == 3
                assert not consumer.channel.qos.can_consume()
                messages.pop().ack()
                assert consumer.channel.qos.can_consume()
                assert _where(client) == (3, 2, 0)
    finally:
        app.close()


def test_closing_a_channel_while_redis_is_down_keeps_its_messages_and_does_not_raise(
    private_redis: _Redis,
) -> None:
    # In the fault harness, kombu's close dropped the channel's pools before restoring its
    # unacknowledged messages and failed with AttributeError ('NoneType' ... 'hostname'):
    # Celery stopped the worker. Closing now restores first and never raises for want of
    # Redis; what it could not restore stays in Redis for the visibility timeout.
    app = _app_sending(private_redis, 3)
    client = private_redis.client
    messages: list[Any] = []
    try:
        conn = app.connection_for_read()
        queue = app.amqp.queues[QUEUE]
        consumer = conn.Consumer([queue], callbacks=[lambda _b, m: messages.append(m)])
        consumer.consume()
        conn.drain_events(timeout=10)
        assert len(messages) == 3
        assert _where(client) == (0, 3, 0)
        private_redis.stop()
        # What Celery does on a lost connection (consumer.on_connection_error_after_connected).
        with contextlib.suppress(Exception):
            conn.collect(socket_timeout=1)
        conn.close()  # no exception
        private_redis.start()
        assert _where(client) == (0, 3, 0)  # kept, for the visibility timeout to bring back
    finally:
        app.close()


def test_closing_a_channel_puts_its_unacknowledged_messages_back(private_redis: _Redis) -> None:
    app = _app_sending(private_redis, 3)
    client = private_redis.client
    messages: list[Any] = []
    try:
        with app.connection_for_read() as conn:
            queue = app.amqp.queues[QUEUE]
            with conn.Consumer([queue], callbacks=[lambda _b, m: messages.append(m)]):
                conn.drain_events(timeout=10)
                messages[0].ack()
        assert _where(client) == (2, 0, 0)
    finally:
        app.close()
