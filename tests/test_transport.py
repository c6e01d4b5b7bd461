"""The Redis transport (worker/transport.py): what it takes is never lost, stranded or looped.

Each test runs a real kombu channel of the project's transport on the run's
private redis-server, and looks at the queue, the in-transit lists and the
unacknowledged hash with a plain Redis client.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import create_team
from contact_sync.db.tables import dead_letters, processed_events
from contact_sync.settings import Settings
from contact_sync.worker import transport
from contact_sync.worker.celery_app import create_app
from contact_sync.worker.tasks import redelivered
from tests.factories import call_event, envelope, task_envelope
from tests.workers import start_worker, stop_worker

QUEUE = "contact_sync.events"
BROKER_DB = 11


@pytest.fixture
def broker(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def client(broker: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(broker)
    yield connection
    connection.close()


@pytest.fixture
def app(broker: str) -> Iterator[Celery]:
    celery = create_app(Settings(broker_url=broker))
    yield celery
    celery.close()


@contextmanager
def consuming(app: Celery, prefetch: int = 10) -> Iterator[tuple[Any, Any, list[Any]]]:
    """(connection, channel, messages received) of a consumer of the events queue."""
    received: list[Any] = []
    with app.connection_for_read() as conn:
        consumer = conn.Consumer([app.amqp.queues[QUEUE]], on_message=received.append)
        consumer.qos(prefetch_count=prefetch)
        with consumer:
            yield conn, consumer.channel, received


def where(client: redis.Redis) -> tuple[int, int, int]:
    """(queued, unacknowledged, in transit) message counts."""
    transit = [k for k in client.keys(f"{QUEUE}.transit.*") if not k.endswith(b".alive")]
    return client.llen(QUEUE), client.hlen("unacked"), sum(client.llen(k) for k in transit)


def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- a channel closed while its take is pending ------------------------------------------


def test_a_channel_closed_with_a_reply_pending_puts_its_message_back_in_the_queue_at_once(
    app: Celery, client: redis.Redis
) -> None:
    # Closing restored the unacknowledged messages first, then kombu read the pending reply and
    # delivered it: its restore_unacked_once raised AssertionError, and the message sat in the
    # unacked hash for the visibility timeout (an hour by default).
    pushed = task_envelope([{"event_id": "evt_pending"}])
    with consuming(app) as (conn, channel, received):
        channel.brpop_timeout = 60  # the take waits in Redis for the whole test
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)  # sends BLMOVE; nothing to take yet
        assert channel._in_poll
        client.lpush(QUEUE, pushed)
        wait_until(lambda: client.llen(QUEUE) == 0)  # the pending take moved it into transit

        channel.close()  # no exception

        assert received == []
        assert where(client) == (1, 0, 0)
        assert client.lrange(QUEUE, 0, -1) == [pushed.encode()]  # unchanged: no one saw it


def test_closing_a_channel_gives_back_what_its_heartbeat_would_have_given_back_later(
    app: Celery, client: redis.Redis
) -> None:
    with consuming(app) as (conn, channel, _received):
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)
        transit = channel.transit_key(QUEUE)
        client.lpush(transit, "left behind by a failed take")

        channel.close()

        assert client.lrange(QUEUE, 0, -1) == [b"left behind by a failed take"]
        assert not client.exists(transit, transit + ".alive")


def test_a_message_acknowledged_or_rejected_after_its_channel_closed_stops_nothing(
    app: Celery, client: redis.Redis
) -> None:
    # Celery closes the channel when the connection to Redis is lost; a task that finished
    # afterwards acknowledged its message on the closed channel: AttributeError ('NoneType'
    # object has no attribute 'acks_per_turn'), "Unrecoverable error", and the worker stopped
    # (the fault harness's small run, 1 worker in 2 runs).
    for n in range(2):
        client.lpush(QUEUE, task_envelope([{"event_id": f"evt_late_{n}"}]))
    with consuming(app) as (conn, channel, received):
        while len(received) < 2:
            conn.drain_events(timeout=10)
        channel.close()  # both restored to the queue
        assert where(client) == (2, 0, 0)

        received[0].ack()  # no exception
        received[1].reject(requeue=True)

        assert where(client) == (2, 0, 0)  # each comes back once; the inbox absorbs the repeat


# --- what goes back from transit is marked redelivered -----------------------------------


def _taken_into_transit(client: redis.Redis, item: str, channel_id: str) -> str:
    client.lpush(QUEUE, item)
    key = f"{QUEUE}.transit.{channel_id}"
    client.lmove(QUEUE, key, "RIGHT", "LEFT")
    return key


def test_a_message_reclaimed_from_a_dead_consumer_is_delivered_as_redelivered(
    app: Celery, client: redis.Redis
) -> None:
    # Orphans went back to the queue unchanged: a message that kills its worker while in
    # transit came back as a first delivery every time, and the poison counter never saw it.
    _taken_into_transit(client, task_envelope([{"event_id": "evt_orphan"}]), "dead")
    with consuming(app) as (conn, channel, received):
        assert channel.reclaim_orphans() == 1
        conn.drain_events(timeout=10)

        [message] = received
        assert message.delivery_info["redelivered"] is True
        assert message.headers["redelivered"] is True
        assert redelivered(message.delivery_info, message.headers)  # what the poison count reads


def test_a_malformed_orphan_goes_back_exactly_as_it_was(app: Celery, client: redis.Redis) -> None:
    _taken_into_transit(client, '{"properties": 7}', "dead")
    with consuming(app) as (_conn, channel, _received):
        assert channel.reclaim_orphans() == 1
    assert client.lrange(QUEUE, 0, -1) == [b'{"properties": 7}']


def test_a_live_consumers_transit_item_is_reclaimed_once_it_is_older_than_the_bound(
    app: Celery, client: redis.Redis
) -> None:
    # A live channel's in-transit items left by a connection error came back only when that
    # channel died: days, for a worker that keeps running.
    old = task_envelope([{"event_id": "evt_stuck"}])
    key = _taken_into_transit(client, old, "live")
    client.set(f"{key}.alive", 1, ex=600)
    with consuming(app) as (_conn, channel, _received):
        channel.transit_stale_seconds = 1.0
        assert channel.reclaim_orphans() == 0  # first seen now: it may be on its way
        newer = task_envelope([{"event_id": "evt_on_its_way"}])
        client.lpush(key, newer)
        seen_at = time.monotonic()
        wait_until(lambda: time.monotonic() - seen_at > 1.2)

        assert channel.reclaim_orphans() == 1

        assert client.lrange(key, 0, -1) == [newer.encode()]  # seen once only: stays
        [back] = client.lrange(QUEUE, 0, -1)
        payload = json.loads(back)
        assert payload["headers"]["id"] == json.loads(old)["headers"]["id"]
        assert payload["headers"]["redelivered"] is True
        assert payload["properties"]["delivery_info"]["redelivered"] is True


# --- where a message goes back to --------------------------------------------------------


def test_a_message_naming_another_priority_and_route_is_restored_to_the_queue_it_came_from(
    app: Celery, client: redis.Redis
) -> None:
    # kombu restores a message to the list its priority and routing key name: a raw publisher's
    # priority 9, or a typo in its routing key, sent it to a list no worker reads.
    raw = json.loads(task_envelope([{"event_id": "evt_elsewhere"}]))
    raw["properties"]["priority"] = 9
    raw["properties"]["delivery_info"]["routing_key"] = "nowhere"
    client.lpush(QUEUE, json.dumps(raw))
    with consuming(app) as (conn, channel, received):
        conn.drain_events(timeout=10)
        assert len(received) == 1
        channel.close()  # unacknowledged: restored

    [back] = client.lrange(QUEUE, 0, -1)
    assert json.loads(back)["headers"]["id"] == raw["headers"]["id"]
    assert where(client) == (1, 0, 0)


# --- entries that are not messages -------------------------------------------------------

VALID = json.loads(task_envelope([{"event_id": "evt_shape"}]))


def _without(*path: str) -> str:
    payload = json.loads(json.dumps(VALID))
    target = payload
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return json.dumps(payload)


def _with(value: Any, *path: str) -> str:
    payload = json.loads(json.dumps(VALID))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(payload)


MALFORMED: dict[str, bytes] = {
    "not JSON": b"hello world",
    "empty": b"",
    "an empty object": b"{}",
    "an array": b"[1, 2, 3]",
    "a string": b'"contact_sync"',
    "a number": b"42",
    "null": b"null",
    "not UTF-8": b'{"body": "\xff\xfe"}',
    "NUL bytes": b"\x00\x00hello\x00",
    "nested too deep": b"[" * 100_000,
    "no properties": _without("properties").encode(),
    "no body": _without("body").encode(),
    "properties an array": _with([], "properties").encode(),
    "no delivery tag": _without("properties", "delivery_tag").encode(),
    "a numeric delivery tag": _with(7, "properties", "delivery_tag").encode(),
    "delivery_info a string": _with("x", "properties", "delivery_info").encode(),
    "body a number": _with(5, "body").encode(),
    "headers an array": _with(["task"], "headers").encode(),
    "content type a number": _with(1, "content-type").encode(),
    "unknown body encoding": _with("rot13", "properties", "body_encoding").encode(),
    "bad base64": _with("abc", "body").encode(),
}


def test_the_table_of_malformed_entries_holds_what_its_names_say() -> None:
    for name, entry in MALFORMED.items():
        verdict = transport.read_entry(entry)
        assert isinstance(verdict, transport.Malformed), name
    assert transport.read_entry(json.dumps(VALID).encode()) == VALID


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_entry_is_handed_over_as_a_message_with_its_bytes_and_recorded(
    name: str, app: Celery, client: redis.Redis
) -> None:
    # 'hello world' raised JSONDecodeError out of the transport and stopped the worker (the
    # entry was dropped); '{}' raised KeyError('properties'), and the entry came back every
    # 30 s for ever.
    entry = MALFORMED[name]
    client.lpush(QUEUE, entry)
    client.lpush(QUEUE, task_envelope([{"event_id": "evt_next"}]))
    with consuming(app) as (conn, _channel, received):
        while len(received) < 2:
            conn.drain_events(timeout=10)

        first, second = received
        assert first.content_type == transport.MALFORMED_CONTENT_TYPE
        assert first.body == entry
        assert "task" not in first.headers
        assert second.headers["task"] == "contact_sync.apply_call_completed"
        assert where(client) == (0, 2, 0)  # both recorded as unacknowledged: never lost
        first.ack()
        second.ack()


def test_an_entry_kombu_cannot_make_a_message_of_after_all_is_handed_over_to_be_parked(
    app: Celery, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should the reader ever pass an envelope kombu then fails on, the entry is still parked,
    # not dropped (stock kombu's way) nor taken back and failed on for ever.
    monkeypatch.setattr(transport, "read_entry", lambda item: {"properties": None})
    client.lpush(QUEUE, task_envelope([{"event_id": "evt_odd"}]))
    with consuming(app) as (conn, _channel, received):
        conn.drain_events(timeout=10)

        [message] = received
        assert message.content_type == transport.MALFORMED_CONTENT_TYPE
        assert "kombu could not deliver it" in message.headers["malformed"]
        assert where(client) == (0, 1, 0)


def _text(raw: bytes) -> str:
    """The raw text a dead letter keeps (consumer.py: undecodable bytes replaced, NUL too)."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


@pytest.mark.slow
def test_any_bytes_pushed_on_the_queue_become_one_dead_letter_each_and_the_worker_serves_on(
    pg_engine: Engine, postgres_url: str, broker: str, client: redis.Redis, tmp_path: Path
) -> None:
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Malformed entries")
    garbage = os.urandom(10 * 1024 * 1024)
    entries = [*MALFORMED.values(), garbage]
    good = call_event(team.id, phone="+12025550177")
    for entry in entries:
        client.lpush(QUEUE, entry)
    client.lpush(QUEUE, task_envelope([good]))
    process = start_worker(postgres_url, broker, tmp_path / "worker.log")
    try:
        applied = select(func.count()).select_from(processed_events)
        letters = select(func.count()).select_from(dead_letters)

        def done() -> bool:
            with pg_engine.connect() as conn:
                return bool(conn.execute(applied).scalar_one() == 1)

        wait_until(done, timeout=120)
        wait_until(lambda: where(client) == (0, 0, 0), timeout=30)  # nothing left to come back
        with pg_engine.connect() as conn:
            assert conn.execute(letters).scalar_one() == len(entries)
            rows = conn.execute(select(dead_letters)).all()
        assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        stop_worker(process)

    assert {row.reason for row in rows} == {"invalid_payload"}
    assert all(row.attempts == 1 for row in rows)
    # The letter says why: the transport's verdict, not a decoder's complaint.
    assert all(row.message.startswith("queue entry is not a message: ") for row in rows)
    kept = sorted(row.payload["raw_body"] for row in rows if "raw_body" in row.payload)
    assert kept == sorted(_text(entry) for entry in MALFORMED.values())  # each as received
    # The 10 MB one as its first 256 KiB and its size (README, "Security").
    [capped] = [row.payload for row in rows if "raw_body" not in row.payload]
    original = json.dumps({"raw_body": _text(garbage)}, separators=(",", ":"))
    assert capped["truncated"] is True
    assert capped["original_bytes"] == len(original)
    assert original.startswith(capped["prefix"])


def test_a_valid_envelope_pushed_by_hand_is_still_a_task_message(
    app: Celery, client: redis.Redis
) -> None:
    body = json.dumps([[{"event_id": "evt_by_hand"}], {}, {}]).encode()
    client.lpush(QUEUE, envelope(body))
    with consuming(app) as (conn, _channel, received):
        conn.drain_events(timeout=10)
        [message] = received
        assert message.headers["task"] == "contact_sync.apply_call_completed"
        assert message.body == body
