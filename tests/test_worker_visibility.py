"""What ops see of the worker: Celery's signals, task events, ``inspect`` and ``revoke``.

One-event messages are grouped by the worker (worker/grouping.py) and
undeliverable ones are parked by its consumer (worker/consumer.py); both
replace Celery's own handling, and both must still show every message to
signal receivers, to event monitors such as Flower, and to ``celery inspect``.

One real worker (prefork, one pool process) serves the module on a Redis
database of the run's private server, started as ``celery worker`` with the
arguments ``contact-sync worker`` uses plus ``-I tests.visibility_probe``:
that module writes each signal the worker sends to a file, with its pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import create_team
from contact_sync.db.tables import dead_letters, processed_events
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, TASK_APPLY_BATCH, create_app
from tests.factories import call_event, envelope, task_envelope
from tests.workers import stop_worker

pytestmark = pytest.mark.slow

BROKER_DB = 12  # of the run's private Redis server: no other module uses it
ROOT = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 60.0
CELERY = [sys.executable, "-m", "celery", "-A", "contact_sync.worker.app"]
T = TypeVar("T")


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    node: str
    broker: str
    app: Celery
    redis: redis.Redis
    log_path: Path
    signal_path: Path

    def signals(self, name: str, task_id: str | None = None) -> list[dict[str, Any]]:
        """The recorded ``name`` signals (of ``task_id`` if given), in the order sent."""
        if not self.signal_path.exists():
            return []
        lines = self.signal_path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.endswith("}")]
        return [
            r
            for r in records
            if r["signal"] == name and (task_id is None or r.get("id") == task_id)
        ]

    def inspect(self, method: str) -> list[dict[str, Any]]:
        """What ``celery inspect <method>`` reports for this worker."""
        replies = getattr(self.app.control.inspect([self.node], timeout=5), method)() or {}
        return list(replies.get(self.node) or [])

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


def _until(check: Callable[[], T], what: str, worker: Worker) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` after a deadline."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = check()
        if value:
            return value
        assert worker.process.poll() is None, worker.tail()
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{worker.tail()}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def worker(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    broker = redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    client = redis.Redis.from_url(broker)
    client.flushdb()
    folder = tmp_path_factory.mktemp("visibility")
    log_path, signal_path = folder / "worker.log", folder / "signals.jsonl"
    node = f"visibility-{uuid.uuid4().hex[:8]}@localhost"
    env = {
        **os.environ,
        "CONTACT_SYNC_DATABASE_URL": postgres_url,
        "CONTACT_SYNC_BROKER_URL": broker,
        "CONTACT_SYNC_TEST_SIGNAL_LOG": str(signal_path),
        # inspect, revoke and enable_events need it; it is off by default (README, "Security").
        "CONTACT_SYNC_WORKER_REMOTE_CONTROL": "true",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    # The arguments of `contact-sync worker` (cli_events.py), and the probe.
    argv = [
        *CELERY,
        "worker",
        "--queues",
        QUEUE,
        "--loglevel",
        "info",
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "--concurrency",
        "1",
        "--hostname",
        node,
        "-I",
        "tests.visibility_probe",
    ]
    with log_path.open("ab") as handle:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    app = create_app(Settings(broker_url=broker))
    running = Worker(process, node, broker, app, client, log_path, signal_path)
    try:
        _until(lambda: b" ready." in log_path.read_bytes(), "the worker to start", running)
        yield running
    finally:
        stop_worker(process)
        app.close()


def _publish(worker: Worker, event: dict[str, Any], task: str = TASK_APPLY) -> str:
    """Push a one-event message as any publisher would; returns its task id."""
    message = task_envelope([event], task)
    worker.redis.lpush(QUEUE, message)
    task_id: str = json.loads(message)["headers"]["id"]
    return task_id


def _applied(engine: Engine, event_id: str) -> bool:
    with engine.connect() as conn:
        stmt = select(func.count()).where(processed_events.c.event_id == event_id)
        return conn.execute(stmt).scalar_one() > 0


def _drained(worker: Worker) -> bool:
    return not worker.redis.llen(QUEUE) and not worker.redis.hlen("unacked")


@pytest.fixture
def team_id(pg_engine: Engine) -> str:
    with pg_engine.begin() as conn:
        return create_team(conn, name="Visible").id


def test_grouped_messages_send_prerun_success_and_postrun_per_message_in_the_pool_process(
    worker: Worker, pg_engine: Engine, team_id: str
) -> None:
    events = [call_event(team_id, phone=f"+1202555{2000 + i:04d}") for i in range(6)]
    ids = [_publish(worker, event) for event in events]
    _until(lambda: all(_applied(pg_engine, e["event_id"]) for e in events), "the events", worker)
    for task_id, event in zip(ids, events, strict=True):
        received = _until(lambda i=task_id: worker.signals("task_received", i), "received", worker)
        prerun = _until(lambda i=task_id: worker.signals("task_prerun", i), "prerun", worker)
        success = _until(lambda i=task_id: worker.signals("task_success", i), "success", worker)
        postrun = _until(lambda i=task_id: worker.signals("task_postrun", i), "postrun", worker)
        assert received[0]["pid"] == worker.process.pid  # the main process holds the message
        assert len(prerun) == len(success) == len(postrun) == 1
        # In a pool process, with the message's id, task, arguments and current request:
        assert prerun[0]["pid"] != worker.process.pid
        assert prerun[0]["name"] == TASK_APPLY
        assert prerun[0]["args"] == [event]
        assert prerun[0]["request_id"] == task_id
        assert success[0]["pid"] == postrun[0]["pid"] == prerun[0]["pid"]
        assert postrun[0]["state"] == "SUCCESS"
    records = worker.signal_path.read_text().splitlines()
    order = [json.loads(r)["signal"] for r in records if json.loads(r).get("id") == ids[0]]
    assert order == ["task_received", "task_prerun", "task_success", "task_postrun"]


def test_inspect_shows_the_running_group_active_the_waiting_reserved_and_revoke_skips(
    worker: Worker, pg_engine: Engine, postgres_url: str, team_id: str
) -> None:
    running, waiting, revoked_waiting, revoked_before = (
        call_event(team_id, phone=f"+1202555{3000 + i:04d}") for i in range(4)
    )
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as lock:
        # The inbox cannot take a claim: the first group blocks in its pool process.
        lock.execute("LOCK TABLE processed_events IN EXCLUSIVE MODE")
        running_id = _publish(worker, running)
        active = _until(
            lambda: [t for t in worker.inspect("active") if t["id"] == running_id],
            "inspect active to show the running message",
            worker,
        )
        assert active[0]["name"] == TASK_APPLY
        assert active[0]["args"] == [running]
        assert active[0]["worker_pid"] not in (None, worker.process.pid)
        assert active[0]["time_start"] is not None
        assert active[0]["acknowledged"] is False  # acknowledged after its commit
        # The command ops run shows the same.
        command = subprocess.run(
            [*CELERY, "inspect", "active", "--json", "--destination", worker.node],
            env={**os.environ, "CONTACT_SYNC_BROKER_URL": worker.broker},
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=True,
        )
        shown = json.loads(command.stdout)[worker.node]
        assert [t["id"] for t in shown] == [running_id]

        # The only pool process is busy: the next messages wait in the main process.
        waiting_id, revoked_id = _publish(worker, waiting), _publish(worker, revoked_waiting)
        reserved = _until(
            lambda: {t["id"] for t in worker.inspect("reserved")} >= {waiting_id, revoked_id},
            "inspect reserved to show the waiting messages",
            worker,
        )
        assert reserved
        states = worker.app.control.inspect([worker.node], timeout=5).query_task(
            running_id, waiting_id
        )
        assert {i: s for i, (s, _) in states[worker.node].items()} == {
            running_id: "active",
            waiting_id: "reserved",
        }

        # A revoked waiting message is skipped when its group goes; one revoked
        # before it arrives is skipped on arrival. Both are acknowledged.
        revoked_before_message = task_envelope([revoked_before])
        revoked_before_id = json.loads(revoked_before_message)["headers"]["id"]
        replies = worker.app.control.revoke(
            [revoked_id, revoked_before_id], destination=[worker.node], reply=True, timeout=5
        )
        assert replies, "the worker did not answer the revoke"
        worker.redis.lpush(QUEUE, revoked_before_message)
        _until(
            lambda: worker.signals("task_revoked", revoked_before_id),
            "the message revoked before it arrived to be skipped",
            worker,
        )
        lock.rollback()

    _until(lambda: _applied(pg_engine, waiting["event_id"]), "the waiting message", worker)
    _until(lambda: _drained(worker), "every message to be acknowledged", worker)
    assert _applied(pg_engine, running["event_id"])
    assert worker.signals("task_revoked", revoked_id)
    for skipped in (revoked_waiting, revoked_before):
        assert not _applied(pg_engine, skipped["event_id"])
    for skipped_id in (revoked_id, revoked_before_id):
        assert not worker.signals("task_prerun", skipped_id)
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(dead_letters)).scalar_one() == 0
    assert worker.inspect("active") == []
    assert worker.inspect("reserved") == []


def test_parked_messages_send_task_rejected_and_task_unknown_as_celery_does(
    worker: Worker, pg_engine: Engine, team_id: str
) -> None:
    undecodable = envelope(b"\xff\xfe not json")
    not_a_task_body = envelope(b'{"event_id": "evt_x"}')
    unknown = task_envelope([call_event(team_id)], "contact_sync.no_such_task")
    ids = {}
    for name, message in (
        ("undecodable", undecodable),
        ("invalid", not_a_task_body),
        ("unknown", unknown),
    ):
        worker.redis.lpush(QUEUE, message)
        ids[name] = json.loads(message)["headers"]["id"]

    def parked() -> bool:
        with pg_engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(dead_letters)).scalar_one() == 3

    _until(parked, "three dead letters", worker)
    _until(lambda: _drained(worker), "every message to be acknowledged", worker)
    for name in ("undecodable", "invalid"):
        rejected = _until(lambda n=name: worker.signals("task_rejected", ids[n]), name, worker)
        assert len(rejected) == 1
        assert rejected[0]["pid"] == worker.process.pid
    assert "DecodeError" in worker.signals("task_rejected", ids["undecodable"])[0]["exc"]
    assert "InvalidTaskError" in worker.signals("task_rejected", ids["invalid"])[0]["exc"]
    unknown_signal = _until(lambda: worker.signals("task_unknown", ids["unknown"]), "", worker)
    assert unknown_signal[0]["name"] == "contact_sync.no_such_task"
    assert "KeyError" in unknown_signal[0]["exc"]


class _Events:
    """A Celery event receiver (what Flower runs) collecting events in a thread."""

    def __init__(self, app: Celery) -> None:
        self.seen: list[dict[str, Any]] = []
        self.connection = app.connection_for_read()
        self.receiver = app.events.Receiver(self.connection, handlers={"*": self.seen.append})
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def of(self, task_id: str) -> list[str]:
        return [e["type"] for e in list(self.seen) if e.get("uuid") == task_id]

    def __enter__(self) -> _Events:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.receiver.should_stop = True
        self.thread.join(timeout=10)
        self.connection.close()


def test_task_events_enabled_by_remote_control_show_grouped_and_parked_messages(
    worker: Worker, pg_engine: Engine, team_id: str
) -> None:
    with _Events(worker.app) as events:
        # Heartbeats are always on: once one arrives, the receiver listens.
        _until(
            lambda: any(
                e["type"] == "worker-heartbeat" and e.get("hostname") == worker.node
                for e in list(events.seen)
            ),
            "a worker heartbeat",
            worker,
        )
        # What Flower does on start: task events are off until asked for.
        replies = worker.app.control.enable_events(destination=[worker.node], reply=True)
        assert replies, "the worker did not answer enable_events"
        good = [call_event(team_id, phone=f"+1202555{4000 + i:04d}") for i in range(3)]
        ids = [_publish(worker, event) for event in good]
        unknown_id = _publish(worker, call_event(team_id), "contact_sync.no_such_task")
        for task_id in ids:
            _until(lambda i=task_id: "task-succeeded" in events.of(i), "task-succeeded", worker)
            assert events.of(task_id) == ["task-received", "task-started", "task-succeeded"]
        _until(lambda: events.of(unknown_id), "task-failed", worker)
        failed = [e for e in events.seen if e.get("uuid") == unknown_id]
        assert [e["type"] for e in failed] == ["task-failed"]
        assert failed[0]["exception"] == "NotRegistered('contact_sync.no_such_task')"
        received = next(e for e in events.seen if e.get("uuid") == ids[0])
        assert received["name"] == TASK_APPLY
        assert received["hostname"] == worker.node
    worker.app.control.disable_events(destination=[worker.node], reply=True)


def test_revoke_with_terminate_stops_a_running_group_and_requeues_its_other_messages(
    worker: Worker, pg_engine: Engine, postgres_url: str, team_id: str
) -> None:
    first, second = (call_event(team_id, phone=f"+1202555{5000 + i:04d}") for i in range(2))
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as lock:
        lock.execute("LOCK TABLE processed_events IN EXCLUSIVE MODE")
        # One push of two messages: taken in one loop turn, they go as one group.
        messages = [task_envelope([first]), task_envelope([second])]
        worker.redis.lpush(QUEUE, *messages)
        first_id, second_id = (json.loads(m)["headers"]["id"] for m in messages)
        active = _until(
            lambda: {t["id"] for t in worker.inspect("active")} >= {first_id, second_id},
            "both messages to run in one group",
            worker,
        )
        assert active
        pid = worker.inspect("active")[0]["worker_pid"]
        worker.app.control.revoke(
            first_id, destination=[worker.node], terminate=True, signal="SIGKILL"
        )
        _until(lambda: worker.signals("task_revoked", first_id), "the revoke", worker)
        lock.rollback()

    _until(lambda: _applied(pg_engine, second["event_id"]), "the requeued message", worker)
    _until(lambda: _drained(worker), "every message to be acknowledged", worker)
    assert worker.signals("task_revoked", first_id)[0]["terminated"] is True
    assert not _applied(pg_engine, first["event_id"])
    assert pid not in {t.get("worker_pid") for t in worker.inspect("active")}
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(dead_letters)).scalar_one() == 0


@pytest.mark.parametrize("task", [TASK_APPLY, TASK_APPLY_BATCH])
@pytest.mark.parametrize(
    "headers",
    [
        {"id": None},
        {"id": ["not", "hashable"]},
        {"task": ["not", "a", "name"]},
        {"stamped_headers": 5},
        {"stamps": "x"},
        {"shadow": {"a": 1}},
    ],
    ids=["no-id", "list-id", "list-task", "stamped-headers", "stamps", "shadow"],
)
def test_a_message_with_headers_celery_cannot_use_is_parked_and_the_worker_serves_on(
    worker: Worker, pg_engine: Engine, team_id: str, headers: dict[str, Any], task: str
) -> None:
    # Each of these raised in the worker's main process and stopped it (batch messages, with
    # Celery's own strategy), or would have once grouped messages became Celery requests.
    bad, good = call_event(team_id), call_event(team_id, phone="+12025556000")
    args = [[bad]] if task == TASK_APPLY_BATCH else [bad]
    message = json.loads(task_envelope(args, task))
    message["headers"].update(headers)
    message["headers"] = {k: v for k, v in message["headers"].items() if v is not None}
    worker.redis.lpush(QUEUE, json.dumps(message))
    _publish(worker, good)
    _until(lambda: _applied(pg_engine, good["event_id"]), "the next message", worker)
    _until(lambda: _drained(worker), "every message to be acknowledged", worker)
    with pg_engine.connect() as conn:
        parked = conn.execute(select(dead_letters.c.reason, dead_letters.c.payload)).all()
    assert [row.reason for row in parked] == ["invalid_payload"]
    assert parked[0].payload["body"][0] == args  # the event is kept as received
    assert not _applied(pg_engine, bad["event_id"])
    assert worker.process.poll() is None
    if "id" in message["headers"]:
        assert worker.signals("task_rejected", message["headers"]["id"])


def test_a_group_past_its_hard_time_limit_is_killed_and_its_messages_requeued_not_lost(
    worker: Worker, pg_engine: Engine, postgres_url: str, team_id: str
) -> None:
    # The worker's own limit, set by ops (a publisher's `timelimit` header is ignored).
    event = call_event(team_id, phone="+12025557000")
    message = json.loads(task_envelope([event]))
    limit = worker.app.control.time_limit
    assert limit(TASK_APPLY, hard=2, destination=[worker.node], reply=True)
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    try:
        with psycopg.connect(dsn) as lock:
            lock.execute("LOCK TABLE processed_events IN EXCLUSIVE MODE")
            worker.redis.lpush(QUEUE, json.dumps(message))
            _until(
                lambda: "TimeLimitExceeded(2" in worker.log_path.read_text(errors="replace"),
                "the group's hard time limit",
                worker,
            )
            lock.rollback()
    finally:
        assert limit(TASK_APPLY, hard=None, destination=[worker.node], reply=True)
    _until(lambda: _applied(pg_engine, event["event_id"]), "the requeued message", worker)
    _until(lambda: _drained(worker), "every message to be acknowledged", worker)
    task_id = message["headers"]["id"]
    assert [r["state"] for r in worker.signals("task_postrun", task_id)] == ["SUCCESS"]
    assert len(worker.signals("task_prerun", task_id)) == 2  # killed once, then applied
