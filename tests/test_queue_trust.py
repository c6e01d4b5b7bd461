"""The queue is a trust boundary: what a publisher sends can neither steer nor stop the worker.

Whoever can write to the queue is a publisher, not an operator (README,
"Security"). Its Celery headers never change whether or when an event
applies; a compressed body is parked unopened; only the two contract tasks
run; remote control is off unless ops turn it on; and a dead letter keeps at
most 256 KiB of what was sent. Event-path tests run a real worker on both
brokers (Redis and RabbitMQ), with messages built by hand as a publisher in
any language would send them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kombu import compression
from kombu.connection import Connection
from sqlalchemy import Engine, Text, cast, event, func, insert, select

from contact_sync.accounts.teams import create_team
from contact_sync.cli.main import main
from contact_sync.clock import utcnow
from contact_sync.db.tables import dead_letters, processed_events
from contact_sync.ops.dead_letters import record
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import TASK_APPLY, TASK_APPLY_BATCH, create_app, event_queues
from tests.brokers import BROKERS, Broker, broker_for
from tests.factories import QUEUE, envelope, task_body, task_headers
from tests.factories import call_event as _call_event
from tests.workers import start_worker, stop_worker

pytestmark = pytest.mark.slow

BROKER_DB = 15  # of the run's private Redis server: no other module uses it
BUDGET_DB = 6  # the transport test's own, while this module's worker consumes from BROKER_DB
WAIT_SECONDS = 90.0
MAX_PAYLOAD_BYTES = 256 * 1024  # the most of a payload a dead letter keeps (README)
T = TypeVar("T")


def call_event(team_id: str, **fields: Any) -> dict[str, Any]:
    """A valid event for a new or existing contact of the team (a phone number of its own)."""
    phone = f"+1202555{int(uuid.uuid4().int % 9000) + 1000:04d}"
    return _call_event(team_id, **{"phone": phone, **fields})


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    broker: Broker
    log_path: Path
    heartbeat: Path

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


def _until(check: Callable[[], T], what: str, worker: Worker, timeout: float = WAIT_SECONDS) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` after a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert worker.process.poll() is None, f"the worker stopped\n{worker.tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{worker.tail()}"
        time.sleep(0.1)


def _start(
    request: pytest.FixtureRequest, kind: str, postgres_url: str, folder: Path, *flags: str
) -> Worker:
    broker = broker_for(request, kind, BROKER_DB)
    heartbeat = folder / "worker.heartbeat"
    process = start_worker(
        postgres_url,
        broker.url,
        folder / "worker.log",
        extra_args=flags,
        CONTACT_SYNC_WORKER_HEARTBEAT_FILE=str(heartbeat),
    )
    return Worker(process, broker, folder / "worker.log", heartbeat)


@pytest.fixture(scope="module", params=BROKERS)
def worker(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One worker (one pool process) per broker for the module's event-path tests."""
    running = _start(request, request.param, postgres_url, tmp_path_factory.mktemp("trust"))
    yield running
    stop_worker(running.process)
    running.broker.close()


@pytest.fixture
def team_id(pg_engine: Engine) -> str:
    with pg_engine.begin() as conn:
        return create_team(conn, name="Trusting").id


def send(
    broker: Broker,
    body: bytes,
    headers: dict[str, Any],
    *,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
) -> None:
    """Put one message with exactly ``headers`` on the queue, as any publisher could."""
    if broker.kind == "redis":
        entry = envelope(
            body, content_type=content_type, content_encoding=content_encoding, headers=headers
        )
        broker.redis.lpush(QUEUE, entry)
        return
    with Connection(broker.url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        queue, _poison = event_queues()
        queue(channel).declare()
        message = channel.prepare_message(
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers,
            properties={"delivery_mode": 2},
        )
        channel.basic_publish(message, exchange="", routing_key=QUEUE)


def args_for(task: str, event: dict[str, Any]) -> list[Any]:
    return [[event]] if task == TASK_APPLY_BATCH else [event]


def _count(engine: Engine, stmt: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def _seen(engine: Engine, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` the worker has taken into the inbox (applied or otherwise)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(processed_events.c.event_id).where(processed_events.c.event_id.in_(event_ids))
        )
        return {row.event_id for row in rows}


def _letters(engine: Engine) -> list[Any]:
    """Every dead letter: reason, message, payload, and the payload's stored size."""
    size = func.length(cast(dead_letters.c.payload, Text)).label("size")
    columns = (dead_letters.c.reason, dead_letters.c.message, dead_letters.c.payload, size)
    with engine.connect() as conn:
        return list(conn.execute(select(*columns)).all())


def _settled(worker: Worker, engine: Engine, team_id: str) -> None:
    """Everything sent before has been handled: a last event sent now is applied, queue empty."""
    last = call_event(team_id)
    send(worker.broker, task_body([last]), task_headers(TASK_APPLY))
    _until(lambda: _seen(engine, [last["event_id"]]), "a last event to be applied", worker)
    _until(worker.broker.drained, "every message to be acknowledged", worker)


# --- 1. publisher headers never change whether or when an event applies ---------------------

HOUR_AGO = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
TIMING_HEADERS: dict[str, dict[str, Any]] = {
    "eta-2099": {"eta": "2099-01-01T00:00:00+00:00"},
    "eta-garbage": {"eta": "next tuesday"},
    "countdown": {"countdown": 86_400},
    "expires-past": {"expires": HOUR_AGO},
    "expires-future": {"expires": "2099-01-01T00:00:00+00:00"},
    "timelimit": {"timelimit": [0.001, 0.001]},
    "timelimit-garbage": {"timelimit": "soon"},
    "retries": {"retries": 10_000},
}


def test_publisher_timing_headers_never_delay_drop_or_time_limit_an_event(
    worker: Worker, pg_engine: Engine, team_id: str
) -> None:
    # Before: a batch with `expires` in the past was discarded silently, with `timelimit`
    # its pool process was killed and the message lost, with `eta` in 2099 it was held.
    sent: dict[str, str] = {}  # event id -> what carried it
    for task in (TASK_APPLY, TASK_APPLY_BATCH):
        for name, headers in TIMING_HEADERS.items():
            event = call_event(team_id)
            send(worker.broker, task_body(args_for(task, event)), task_headers(task, **headers))
            sent[event["event_id"]] = f"{task} with {name}"
        # Protocol 1 carries the same fields in the body.
        for name in ("eta-2099", "expires-past", "timelimit"):
            event = call_event(team_id)
            body = {"task": task, "id": str(uuid.uuid4()), "args": args_for(task, event)}
            body |= {"kwargs": {}, **TIMING_HEADERS[name]}
            send(worker.broker, json.dumps(body).encode(), {})
            sent[event["event_id"]] = f"{task} (protocol 1) with {name}"

    deadline = time.monotonic() + WAIT_SECONDS
    while (seen := _seen(pg_engine, list(sent))) != set(sent) and time.monotonic() < deadline:
        assert worker.process.poll() is None, worker.tail()
        time.sleep(0.2)
    assert sorted(sent[e] for e in set(sent) - seen) == [], worker.tail()
    _until(worker.broker.drained, "every message to be acknowledged", worker)
    assert _letters(pg_engine) == []
    with pg_engine.connect() as conn:
        outcomes = conn.execute(
            select(processed_events.c.outcome).where(processed_events.c.event_id.in_(list(sent)))
        ).all()
    assert {row.outcome for row in outcomes} <= {"applied", "no_change"}


def test_a_publishers_linked_tasks_are_dropped_never_sent(
    worker: Worker, pg_engine: Engine, team_id: str
) -> None:
    # Before: a batch's `chain` and `callbacks` made the worker publish those tasks itself.
    applied, chained, called_back = (call_event(team_id) for _ in range(3))
    link = {"args": [chained], "kwargs": {}, "options": {}, "immutable": True}
    embed = {
        "callbacks": [{"task": TASK_APPLY, **link, "args": [called_back]}],
        "errbacks": None,
        "chain": [{"task": TASK_APPLY, **link}],
        "chord": None,
    }
    send(
        worker.broker,
        task_body([[applied]], embed=embed),
        task_headers(TASK_APPLY_BATCH),
    )
    _until(lambda: _seen(pg_engine, [applied["event_id"]]), "the batch to be applied", worker)
    _settled(worker, pg_engine, team_id)
    assert _seen(pg_engine, [chained["event_id"], called_back["event_id"]]) == set()
    assert _letters(pg_engine) == []


# --- 2. compressed bodies -------------------------------------------------------------------


def _bomb(team_id: str, inflated_bytes: int) -> tuple[str, bytes]:
    """(event id, zlib body): a task body that inflates to ``inflated_bytes`` of one event."""
    event = call_event(team_id)
    head, tail = task_body([{**event, "summary": "@@"}]).split(b"@@")
    packer = zlib.compressobj(9)
    parts = [packer.compress(head)]
    chunk = b"A" * (1 << 20)
    for _ in range(inflated_bytes >> 20):
        parts.append(packer.compress(chunk))
    parts += [packer.compress(tail), packer.flush()]
    return event["event_id"], b"".join(parts)


def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the pool processes), from /proc."""
    total = 0
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                pids += [int(child) for child in handle.read().split()]
    except OSError:
        pass
    for each in pids:
        try:
            with open(f"/proc/{each}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class _PeakMemory:
    """The highest resident memory of a worker and its children while in use (sampled)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# Runs the command in a process of its own and reports that process' peak resident memory
# (VmHWM: after exec, so not the test process' pages a fork shares at first).
_PEAK_OF_CLI = (
    "import sys\n"
    "from contact_sync.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "print('peak-kib', peak, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _cli_peak_memory(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """(peak resident bytes, stdout) of ``contact-sync ARGS`` run to its end."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [peak] = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak-kib")]
    return int(peak) * 1024, done.stdout


def test_compression_bombs_are_parked_unopened_and_the_worker_stays_small(
    worker: Worker, pg_engine: Engine, postgres_url: str, team_id: str
) -> None:
    # Before: five 137 KB bodies inflating to 105 MB each took the main process to 1.6 GB,
    # each event was stored whole as a dead letter, and listing them took 1.6 GB.
    bombs = [_bomb(team_id, 100 << 20) for _ in range(5)]
    assert all(len(body) < 200_000 for _, body in bombs)
    with _PeakMemory(worker.process.pid) as memory:
        for _event_id, body in bombs:
            headers = task_headers(TASK_APPLY, compression="application/x-gzip")
            send(worker.broker, body, headers)
        count = select(func.count()).select_from(dead_letters)
        _until(lambda: _count(pg_engine, count) >= 5, "the five bombs to be parked", worker)
        _settled(worker, pg_engine, team_id)
    assert memory.peak < 400 << 20, f"worker and children peaked at {memory.peak >> 20} MB"
    letters = _letters(pg_engine)
    assert len(letters) == 5
    for letter in letters:
        assert letter.reason == "invalid_payload"
        assert "compressed message refused" in letter.message
        assert letter.payload["compression"] == "application/x-gzip"
        assert letter.size <= MAX_PAYLOAD_BYTES
    kept = {base64.b64decode(letter.payload["body_base64"]) for letter in letters}
    assert kept == {body for _, body in bombs}  # as received, never inflated
    assert _seen(pg_engine, [event_id for event_id, _ in bombs]) == set()

    env = {**os.environ, "CONTACT_SYNC_DATABASE_URL": postgres_url}
    peak, output = _cli_peak_memory(["dead-letters", "list"], env)
    assert len(output.splitlines()) == 5, output
    assert peak < 150 << 20, f"dead-letters list peaked at {peak >> 20} MB"


@pytest.mark.parametrize("codec", ["gzip", "application/x-bz2", "application/x-made-up"])
def test_any_compression_header_parks_the_message_with_its_body_as_received(
    worker: Worker, pg_engine: Engine, team_id: str, codec: str
) -> None:
    event = call_event(team_id)
    body = zlib.compress(task_body([event]))
    send(worker.broker, body, task_headers(TASK_APPLY_BATCH, compression=codec))
    count = select(func.count()).select_from(dead_letters)
    _until(lambda: _count(pg_engine, count) >= 1, "the message to be parked", worker)
    _settled(worker, pg_engine, team_id)
    [letter] = _letters(pg_engine)
    assert f"compressed message refused (compression {codec!r})" == letter.message
    assert base64.b64decode(letter.payload["body_base64"]) == body
    assert _seen(pg_engine, [event["event_id"]]) == set()


# --- 3. only the two contract tasks run ------------------------------------------------------

BUILT_INS = (
    "celery.map",
    "celery.starmap",
    "celery.chunks",
    "celery.accumulate",
    "celery.backend_cleanup",
    "celery.group",
    "celery.chain",
    "celery.chord",
    "celery.chord_unlock",
)


def _signature(task: str, args: list[Any]) -> dict[str, Any]:
    return {"task": task, "args": args, "kwargs": {}, "options": {}, "immutable": True}


def _built_in_args(name: str, event: dict[str, Any]) -> list[Any]:
    """Arguments with which ``name`` would apply ``event`` if it ran (or at least log it)."""
    apply = {"task": TASK_APPLY, "args": [], "kwargs": {}, "options": {}}
    return {
        "celery.map": [apply, [event]],
        "celery.starmap": [apply, [[event]]],
        "celery.chunks": [apply, [[event]], 1],
        "celery.group": [[_signature(TASK_APPLY, [event])]],
        "celery.chain": [[_signature(TASK_APPLY, [event])]],
        "celery.chord": [[_signature(TASK_APPLY, [event])], _signature(TASK_APPLY, [event])],
        "celery.chord_unlock": [str(uuid.uuid4()), _signature(TASK_APPLY, [event])],
    }.get(name, [event])


def test_only_the_two_contract_tasks_run_any_other_name_is_parked_unrun(
    worker: Worker, pg_engine: Engine, team_id: str
) -> None:
    # Before: celery.map, starmap and chunks applied the event in the worker's main process,
    # accumulate and backend_cleanup ran silently, group and chain logged the whole event.
    secret = f"secret-{uuid.uuid4().hex}@example.com"
    names = [*BUILT_INS, "contact_sync.no_such_task", "os.system"]
    sent: dict[str, str] = {}
    for name in names:
        event = call_event(team_id, summary=f"call with {secret}")
        send(worker.broker, task_body(_built_in_args(name, event)), task_headers(name))
        sent[event["event_id"]] = name
    event = call_event(team_id, summary=f"call with {secret}")  # protocol 1
    body = {"task": "celery.map", "id": str(uuid.uuid4()), "kwargs": {}}
    send(
        worker.broker,
        json.dumps({**body, "args": _built_in_args("celery.map", event)}).encode(),
        {},
    )
    sent[event["event_id"]] = "celery.map (protocol 1)"

    count = select(func.count()).select_from(dead_letters)

    def parked_or_run() -> bool:
        return _count(pg_engine, count) >= len(sent) or bool(_seen(pg_engine, list(sent)))

    _until(parked_or_run, "every message to be parked", worker)
    ran = sorted(sent[event_id] for event_id in _seen(pg_engine, list(sent)))
    assert ran == [], "a task that is not ours ran"
    _settled(worker, pg_engine, team_id)
    letters = _letters(pg_engine)
    assert len(letters) == len(sent)
    assert {letter.reason for letter in letters} == {"invalid_payload"}
    by_task = {letter.payload["task"]: letter.message for letter in letters}
    assert set(by_task) == set(names)
    for name in BUILT_INS:
        assert by_task[name].startswith(f"task not allowed {name!r}")
    for name in ("contact_sync.no_such_task", "os.system"):
        assert by_task[name].startswith(f"unknown task {name!r}")
    assert secret not in worker.log_path.read_text(errors="replace")  # no event in the logs


# --- dead letters: capped payloads, paged listing --------------------------------------------


def test_a_dead_letter_keeps_at_most_256_kib_of_its_payload_with_the_original_size(
    engine: Engine,
) -> None:
    big = {"raw_body": "x" * 1_000_000 + '"\\' * 100_000}
    small = {"raw_body": "fits"}
    with engine.begin() as conn:
        for payload in (big, small):
            record(
                conn,
                payload=payload,
                reason="invalid_payload",
                message="m",
                event_id=None,
                team_id=None,
                now=utcnow(),
            )
    with engine.connect() as conn:
        stored = [row.payload for row in conn.execute(select(dead_letters.c.payload))]
    [capped] = [p for p in stored if p != small]
    original = json.dumps(big, separators=(",", ":"))
    assert capped["truncated"] is True
    assert capped["original_bytes"] == len(original)
    assert original.startswith(capped["prefix"])
    assert len(json.dumps(capped)) <= MAX_PAYLOAD_BYTES
    assert len(capped["prefix"]) > MAX_PAYLOAD_BYTES // 3
    assert small in stored


def test_dead_letters_list_pages_and_reads_no_payload_for_its_table(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(dead_letters),
            [
                {
                    "id": f"dl_{n:03d}",
                    "event_id": f"evt_{n:03d}",
                    "team_id": None,
                    "reason": "invalid_payload",
                    "message": f"letter {n} " + "m" * 300,
                    "payload": {"raw_body": "p" * 1000},
                    "first_seen_at": now,
                    "last_seen_at": now - timedelta(seconds=n),
                    "attempts": 1,
                }
                for n in range(60)
            ],
        )
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        base = ["--database-url", database_url, "dead-letters", "list"]
        assert main(base) == 0
        default = capsys.readouterr().out.splitlines()
        assert main([*base, "--limit", "7", "--offset", "55"]) == 0
        last = capsys.readouterr().out.splitlines()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert len(default) == 51
    assert default[-1] == "more: --offset 50"
    assert [line.split()[0] for line in default[:50]] == [f"dl_{n:03d}" for n in range(50)]
    assert [line.split()[0] for line in last] == [f"dl_{n:03d}" for n in range(55, 60)]
    assert all(len(line) < 250 for line in default)
    letter_reads = [s for s in statements if "FROM dead_letters" in s]
    assert letter_reads
    assert not any("payload" in s for s in letter_reads)

    assert main([*base, "--json", "--limit", "2", "--offset", "1"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [letter["id"] for letter in page] == ["dl_001", "dl_002"]
    assert page[0]["payload"] == {"raw_body": "p" * 1000}


# --- the Redis transport's prefetch budget ---------------------------------------------------

INFLATING = "application/x-contact-sync-test-inflate"


def _drain(conn: Any, received: list[Any], count: int, timeout: float = 10) -> None:
    """Let ``conn`` deliver until ``count`` messages were received or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, *conn.connection_errors):
            conn.drain_events(timeout=0.5)


def test_the_prefetch_byte_budget_counts_what_kombu_decoded_not_the_queue_entry(
    redis_url: str,
) -> None:
    # A codec the consumer never saw (it refuses the ones kombu knows as it starts): what
    # kombu inflates as it makes the message counts at its inflated size.
    compression.register(lambda body: body, lambda body: body * 100, INFLATING)
    url = redis_url.rsplit("/", 1)[0] + f"/{BUDGET_DB}"
    broker = Broker(url)
    broker.flush()
    app = create_app(Settings(broker_url=url, worker_prefetch_bytes=64 * 1024))
    try:
        body = task_body([{"filler": "y" * 1000}])
        send(broker, body, task_headers(TASK_APPLY, compression=INFLATING))
        received: list[Any] = []
        with app.connection_for_read() as conn:
            consumer = conn.Consumer([app.amqp.queues[QUEUE]], on_message=received.append)
            consumer.qos(prefetch_count=10)
            with consumer:
                _drain(conn, received, 1)
                assert len(received[0].body) == len(body) * 100
                assert consumer.channel.qos._bytes >= len(body) * 100
                # That one message fills the 64 KiB budget: no more is taken while it is held.
                for _ in range(2):
                    send(broker, body, task_headers(TASK_APPLY, compression=INFLATING))
                _drain(conn, received, 2, timeout=2)
                assert len(received) == 1
                assert broker.redis.llen(QUEUE) == 2
                received[0].ack()  # room again: the others come
                _drain(conn, received, 3)
                assert len(received) == 3
    finally:
        app.close()
        broker.close()
