"""The contract between worker/transport.py and the kombu it runs on.

The transport overrides or reads private names of kombu's Redis transport
(``worker/kombu_hooks.HOOKS`` lists them). These tests check, on the run's
private redis-server, that kombu still calls and reads them the way the
transport expects: a kombu upgrade that changes one fails here, and a worker
on it refuses to start (``kombu_hooks.refusal``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu.asynchronous import Hub
from kombu.transport import redis as kombu_redis

from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.settings import Settings
from contact_sync.worker import kombu_hooks, transport
from contact_sync.worker.celery_app import create_app
from tests.factories import task_envelope

QUEUE = "contact_sync.events"
BROKER_DB = 12


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
def consuming(app: Celery) -> Iterator[tuple[Any, Any, list[Any]]]:
    """(connection, channel, messages received) of a consumer of the events queue."""
    received: list[Any] = []
    with app.connection_for_read() as conn:
        consumer = conn.Consumer([app.amqp.queues[QUEUE]], on_message=received.append)
        consumer.qos(prefetch_count=10)
        with consumer:
            yield conn, consumer.channel, received


def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _stale_unacked(client: redis.Redis, event_id: str) -> str:
    """A message a dead worker left unacknowledged, past its visibility timeout."""
    envelope = json.loads(task_envelope([{"event_id": event_id}]))
    tag = envelope["properties"]["delivery_tag"]
    client.hset("unacked", tag, json.dumps([envelope, "", QUEUE]))
    client.zadd("unacked_index", {tag: time.time() - 7200})
    return str(envelope["headers"]["id"])


def _queued_ids(client: redis.Redis) -> list[str]:
    return [json.loads(item)["headers"]["id"] for item in client.lrange(QUEUE, 0, -1)]


# --- the startup check -------------------------------------------------------------------


def test_the_installed_kombu_has_every_hook_the_transport_uses() -> None:
    assert kombu_hooks.problems() == []
    assert kombu_hooks.refusal() is None


def _without(cls: type, name: str) -> type:
    """A copy of kombu's class ``cls`` that lacks ``name``."""
    namespace = {k: v for k, v in vars(cls).items() if k not in (name, "__dict__", "__weakref__")}
    return type(cls.__name__, cls.__bases__, namespace)


def test_the_check_names_a_hook_missing_from_kombu_and_the_versions_needed() -> None:
    classes = {
        **kombu_hooks.KOMBU_CLASSES,
        "Channel": _without(kombu_redis.Channel, "_brpop_start"),
    }

    assert kombu_hooks.problems(classes) == ["missing Channel._brpop_start"]
    line = kombu_hooks.refusal(classes)
    assert line is not None
    assert line.startswith("contact_sync's Redis transport needs kombu>=5.7,<5.8")
    assert line.endswith("): missing Channel._brpop_start")
    assert "\n" not in line


def test_the_check_names_a_hook_kombu_now_calls_another_way() -> None:
    class Changed(kombu_redis.Channel):  # type: ignore[misc]
        def _brpop_start(self, timeout: Any = None, queues: Any = None) -> None:
            raise AssertionError("never called")

    problems = kombu_hooks.problems({**kombu_hooks.KOMBU_CLASSES, "Channel": Changed})

    assert problems == ["Channel._brpop_start(timeout, queues) instead of (timeout)"]


def test_the_check_names_an_attribute_kombu_no_longer_sets() -> None:
    class Poller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._members = self.__dict__.pop("_channels")

    problems = kombu_hooks.problems({**kombu_hooks.KOMBU_CLASSES, "MultiChannelPoller": Poller})

    assert problems[0] == "missing MultiChannelPoller._channels"


def test_the_check_notices_a_poller_that_ignores_the_restore_throttle() -> None:
    # kombu 5.6's poller asked for a restore scan without the throttle: kombu scanned on
    # every 10th call only, and a stranded message came back after 100 s, not 10 s.
    class Poller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
        def maybe_restore_messages(self) -> Any:
            for channel in self._channels:
                return channel.qos.restore_visible(num=channel.unacked_restore_limit)

    problems = kombu_hooks.problems({**kombu_hooks.KOMBU_CLASSES, "MultiChannelPoller": Poller})

    assert problems == [
        "MultiChannelPoller.maybe_restore_messages ignores unacked_restore_throttle"
    ]


@pytest.mark.slow
def test_a_worker_refuses_to_start_on_a_kombu_that_lacks_a_hook(
    broker: str, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import kombu.transport.redis as r\ndel r.Channel._flush_brpop_reauth\n"
    )
    database_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(database_url)
    upgrade(engine)  # a worker refuses an unmigrated database first; this is about kombu
    engine.dispose()
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "CONTACT_SYNC_DATABASE_URL": database_url,
        "CONTACT_SYNC_BROKER_URL": broker,
    }

    done = subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", "worker", "--concurrency", "1"],
        env=environment,
        capture_output=True,
        timeout=120,
        check=False,
    )

    stderr = done.stderr.decode().strip().splitlines()
    assert done.returncode == kombu_hooks.EXIT_CODE, done.stderr.decode()[-3000:]
    assert stderr[-1].startswith("contact_sync's Redis transport needs kombu>=5.7,<5.8")
    assert stderr[-1].endswith("missing Channel._flush_brpop_reauth")
    assert b" ready." not in done.stdout + done.stderr
    assert redis.Redis.from_url(broker).llen(QUEUE) == 0


# --- taking a message ----------------------------------------------------------------------


def test_the_poller_starts_a_take_with_brpop_start_and_delivers_it_with_brpop_read(
    app: Celery, client: redis.Redis
) -> None:
    with consuming(app) as (conn, channel, received):
        starts: list[tuple[Any, ...]] = []
        reads: list[dict[str, Any]] = []
        start, read = channel._brpop_start, channel.handlers["BRPOP"]
        assert read.__func__ is transport.Channel._brpop_read  # kombu bound our override
        channel._brpop_start = lambda *args: (starts.append(args), start(*args))[1]
        channel.handlers["BRPOP"] = lambda **options: (reads.append(options), read(**options))[1]
        poller = conn.transport.cycle
        assert isinstance(poller, transport.MultiChannelPoller)
        assert channel in poller._channels

        poller.on_poll_start()  # kombu's poller: a take is sent when none is outstanding

        assert starts == [()]  # called with no timeout: the channel's brpop_timeout applies
        assert channel._in_poll is channel.client.connection
        assert abs(channel._brpop_sent_at - time.monotonic()) < 5  # kombu's health check
        assert channel.brpop_timeout == kombu_redis.Transport.brpop_timeout
        pushed = json.loads(task_envelope([{"event_id": "evt_taken"}]))
        client.lpush(QUEUE, json.dumps(pushed))
        conn.drain_events(timeout=10)

        assert reads == [{}]
        assert channel._in_poll is None  # the reply was read
        [message] = received  # through kombu's Transport._deliver to the consumer
        assert message._raw["headers"]["id"] == pushed["headers"]["id"]
        assert message._raw is channel.qos._delivered[message.delivery_tag]._raw
        record = json.loads(client.hget("unacked", message.delivery_tag))
        assert record == [message._raw, "", QUEUE]  # kombu's record: [payload, exchange, key]


def test_kombus_health_check_drops_a_take_never_answered(app: Celery) -> None:
    # The take sets _brpop_sent_at as kombu's BRPOP does, so kombu's check of a half-open
    # socket covers it.
    with consuming(app) as (conn, channel, _received):
        channel.brpop_timeout = 60
        poller = conn.transport.cycle
        poller.on_poll_start()
        connection = channel._in_poll
        assert connection._sock is not None
        channel._brpop_sent_at = time.monotonic() - 3600

        poller.maybe_check_brpop_health()

        assert connection._sock is None


def test_kombus_poll_error_reads_a_pending_take_and_its_message_waits_in_transit(
    app: Celery, client: redis.Redis
) -> None:
    # On a socket error the poller calls _poll_error("BRPOP"), which reads and drops the reply.
    # The transport does not override it: what the take moved stays in transit, where the
    # age-based reclaim finds it.
    with consuming(app) as (conn, channel, received):
        channel.brpop_timeout = 60
        conn.transport.cycle.on_poll_start()
        client.lpush(QUEUE, task_envelope([{"event_id": "evt_poll_error"}]))
        wait_until(lambda: client.llen(channel.transit_key(QUEUE)) == 1)

        channel._poll_error("BRPOP")

        assert received == []
        assert client.llen(channel.transit_key(QUEUE)) == 1
        channel._in_poll.disconnect()  # as kombu's health check does next: no reply will come
        assert channel._in_poll is None
        channel.transit_stale_seconds = 0
        channel.reclaim_orphans()  # first seen: stale at once with a bound of 0
        assert client.llen(QUEUE) == 1


def test_on_poll_start_runs_each_event_loop_turn_and_writes_that_turns_acks(
    app: Celery, client: redis.Redis
) -> None:
    client.lpush(QUEUE, task_envelope([{"event_id": "evt_turn"}]))
    hub = Hub()
    try:
        with consuming(app) as (conn, _channel, received):
            conn.transport.register_with_event_loop(conn.connection, hub)
            assert conn.transport.acks_per_turn
            deadline = time.monotonic() + 30
            while not received:
                assert time.monotonic() < deadline
                hub.run_once()
            received[0].ack()
            assert client.hlen("unacked") == 1  # written at the next turn's start

            hub.run_once()

            assert client.hlen("unacked") == 0
            assert client.zcard("unacked_index") == 0
    finally:
        hub.close()


# --- restoring what is unacknowledged ------------------------------------------------------


def test_our_unacked_record_goes_back_through_kombus_own_restore_marked_redelivered(
    app: Celery, client: redis.Redis
) -> None:
    client.lpush(QUEUE, task_envelope([{"event_id": "evt_restored"}]))
    with consuming(app) as (conn, channel, received):
        conn.drain_events(timeout=10)
        [first] = received
        assert not first.delivery_info.get("redelivered")

        kombu_redis.QoS.restore_unacked(channel.qos)  # kombu's, not the override

        assert client.hlen("unacked") == 0
        assert client.zcard("unacked_index") == 0
        [back] = client.lrange(QUEUE, 0, -1)
        assert json.loads(back)["headers"]["redelivered"] is True
        conn.drain_events(timeout=10)
        second = received[1]
        assert second.headers["id"] == first.headers["id"]
        assert second.delivery_info["redelivered"] is True


def test_kombus_visibility_scan_restores_our_record_marked_redelivered(
    app: Celery, client: redis.Redis
) -> None:
    client.lpush(QUEUE, task_envelope([{"event_id": "evt_visible"}]))
    with consuming(app) as (conn, channel, received):
        conn.drain_events(timeout=10)
        tag = received[0].delivery_tag
        client.zadd("unacked_index", {tag: time.time() - 7200})  # past the visibility timeout

        kombu_redis.QoS.restore_visible(channel.qos, interval=1)

        [back] = client.lrange(QUEUE, 0, -1)
        payload = json.loads(back)
        assert payload["headers"]["id"] == received[0].headers["id"]
        assert payload["properties"]["delivery_info"]["redelivered"] is True
        assert client.hlen("unacked") == 0


def test_kombus_periodic_scan_honours_the_restore_throttle_of_one(
    app: Celery, client: redis.Redis
) -> None:
    # The app sets unacked_restore_throttle=1: each 10 s tick scans (kombu's default is 1 in 10).
    with consuming(app) as (conn, _channel, _received):
        poller = conn.transport.cycle
        first = _stale_unacked(client, "evt_first")
        poller.maybe_restore_messages()
        assert _queued_ids(client) == [first]

        second = _stale_unacked(client, "evt_second")
        poller.maybe_restore_messages()  # the very next tick

        assert sorted(_queued_ids(client)) == sorted([first, second])


def test_restore_unacked_once_is_what_closing_calls_and_it_restores_once(
    app: Celery, client: redis.Redis
) -> None:
    client.lpush(QUEUE, task_envelope([{"event_id": "evt_once"}]))
    with consuming(app) as (conn, channel, received):
        conn.drain_events(timeout=10)
        assert len(received) == 1

        channel.qos.restore_unacked_once()
        channel.qos.restore_unacked_once()  # again: nothing to do, nothing raised

        assert client.llen(QUEUE) == 1
        assert channel.qos._delivered.restored
        channel.close()
        assert client.llen(QUEUE) == 1
