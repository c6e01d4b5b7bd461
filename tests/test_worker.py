"""Events through a broker to a real ``contact-sync worker`` process, checked in PostgreSQL.

Every test runs on both brokers: Redis and RabbitMQ. One worker (prefork,
concurrency 2) serves the whole module on each, on a Redis database or the
run's RabbitMQ virtual host; each test starts from empty tables and ends with
the queue drained and the worker alive. Waits poll the database or the worker's JSON log with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from celery import Celery
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.calls.apply import STATE_FIELDS
from contact_sync.db.tables import contact_history, dead_letters, processed_events
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, TASK_APPLY_BATCH, create_app
from contact_sync.worker.publisher import EventPublisher, publish_event
from tests.brokers import BROKERS, Broker, broker_for
from tests.factories import (
    call_event,
    call_rows,
    contact_row,
    make_contact,
    merged_in_time_order,
)

pytestmark = pytest.mark.slow

# A Redis database of its own, so nothing else consumes (or floods) this worker's queue.
BROKER_DB = int(os.environ.get("CONTACT_SYNC_TEST_WORKER_REDIS_DB", "7"))
STARTUP_SECONDS = 60.0
WAIT_SECONDS = 30.0

T = TypeVar("T")


@dataclass
class Worker:
    """The running worker process, its log, and a Celery app that publishes to it."""

    process: subprocess.Popen[bytes]
    log_path: Path
    app: Celery
    broker: Broker

    def log(self) -> list[dict[str, Any]]:
        """The worker's structured log lines so far (Celery's banner is skipped)."""
        records = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line still being written
        return records

    def outcomes(self, event_id: str) -> list[str]:
        """The outcome the worker logged for each delivery of ``event_id``."""
        return [
            r["outcome"] for r in self.log() if r.get("event_id") == event_id and "outcome" in r
        ]

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, what: str, probe: Callable[[], T], timeout: float = WAIT_SECONDS) -> T:
        """Poll ``probe`` until it returns something truthy; fail with the worker's log."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if self.process.poll() is not None:
                pytest.fail(
                    f"the worker exited ({self.process.returncode}) while waiting for "
                    f"{what}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.tail()}")
            time.sleep(0.05)

    def wait_drained(self) -> None:
        """Nothing queued and nothing delivered but unacknowledged (acks are late: after commit)."""
        self.wait("the queue to drain", self.broker.drained)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # warm shutdown: finish running tasks, then exit
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the pool children go too
        process.wait(timeout=10)


@pytest.fixture(scope="module", params=BROKERS)
def worker(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    broker = broker_for(request, request.param, BROKER_DB)
    broker_url = broker.url
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "CONTACT_SYNC_DATABASE_URL": postgres_url,
        "CONTACT_SYNC_BROKER_URL": broker_url,
    }
    # A file, not a pipe: nobody reads a pipe while tests run, and a full one blocks the worker.
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "contact_sync.cli.main", "worker", "--concurrency", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = create_app(Settings(broker_url=broker_url, database_url=postgres_url))
    running = Worker(process, log_path, app, broker)
    try:
        running.wait(
            "the worker to be ready",
            lambda: any(r.get("message", "").endswith(" ready.") for r in running.log()),
            timeout=STARTUP_SECONDS,
        )
        yield running
    finally:
        _stop(process)
        app.close()
        broker.flush()
        broker.close()


@pytest.fixture(autouse=True)
def _worker_survives(worker: Worker, pg_engine: Engine) -> Iterator[None]:
    """Empty tables before each test (``pg_engine``); after it, nothing left in flight."""
    yield
    worker.wait_drained()
    assert worker.process.poll() is None, worker.tail()


# --- reading the results --------------------------------------------------------------


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def inbox(engine: Engine, event_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(processed_events).where(processed_events.c.event_id == event_id)
        ).one_or_none()


def call_history(engine: Engine, contact_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(contact_history).where(
                    contact_history.c.contact_id == contact_id, contact_history.c.source == "call"
                )
            )
        )


def all_history(engine: Engine, contact_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(contact_history).where(contact_history.c.contact_id == contact_id))
        )


def letters_by_event(engine: Engine) -> dict[str | None, Any]:
    with engine.connect() as conn:
        return {row.event_id: row for row in conn.execute(select(dead_letters))}


def wait_processed(worker: Worker, engine: Engine, event_id: str) -> Any:
    """The event's inbox row, committed with its final outcome by the transaction applying it."""
    return worker.wait(f"event {event_id} in the inbox", lambda: inbox(engine, event_id))


def state_of(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in STATE_FIELDS}


def assert_versions_contiguous(engine: Engine, contact_id: str) -> list[Any]:
    """Every change bumped the version by one: 1..N with no gap and no repeat."""
    records = all_history(engine, contact_id)
    changing = [
        r for r in records if r.version_before is None or r.version_after != r.version_before
    ]
    assert all(
        r.version_before is None or r.version_after == r.version_before + 1 for r in changing
    )
    assert all(r.version_after == r.version_before for r in records if r not in changing)
    assert sorted(r.version_after for r in changing) == list(
        range(1, contact_row(engine, contact_id).version + 1)
    )
    return records


EXTRACTION: dict[str, Any] = {
    "extractor_version": "v3",
    "custom_fields": {
        "budget": {"value": 50000, "confidence": 0.92, "evidence": "about fifty thousand"},
        "product_interest": "solar",
        "callback_day": None,
    },
    "contact": {"email": "ada@example.com", "job_title": "CTO"},
    "lead_status": "qualified",
    "tags": ["hot-lead"],
    "summary": "Interested in a 6 kW system; call back Tuesday.",
}


# --- the tests --------------------------------------------------------------------------


def test_a_published_event_is_applied_by_the_worker(
    worker: Worker, pg_engine: Engine, pg_team: Team
) -> None:
    contact = make_contact(pg_engine, pg_team.id, phone="+12025551234")
    event = call_event(pg_team.id, phone="(202) 555-1234", extraction=EXTRACTION)

    message_id = publish_event(event, app=worker.app)

    claimed = wait_processed(worker, pg_engine, event["event_id"])
    assert (claimed.outcome, claimed.contact_id) == ("applied", contact.id)
    row = contact_row(pg_engine, contact.id)
    assert row.custom_fields == {"budget": 50000, "product_interest": "solar"}
    assert (row.email, row.job_title, row.lead_status, row.tags) == (
        "ada@example.com",
        "CTO",
        "qualified",
        ["hot-lead"],
    )
    assert row.version == 2
    [record] = call_history(pg_engine, contact.id)
    assert (record.event_id, record.version_before, record.version_after) == (
        event["event_id"],
        1,
        2,
    )
    assert str(uuid.UUID(message_id)) == message_id
    [logged] = worker.wait(
        "the outcome log line",
        lambda: [r for r in worker.log() if r.get("event_id") == event["event_id"]],
    )
    assert (logged["outcome"], logged["contact_id"], logged["team_id"]) == (
        "applied",
        contact.id,
        pg_team.id,
    )
    assert logged["version"] == 2


def test_the_same_event_published_three_times_changes_the_contact_once(
    worker: Worker, pg_engine: Engine, pg_team: Team
) -> None:
    contact = make_contact(pg_engine, pg_team.id)
    event = call_event(pg_team.id, contact_id=contact.id, extraction=EXTRACTION)

    for _ in range(3):
        publish_event(event, app=worker.app)

    outcomes = worker.wait(
        "three deliveries", lambda: len(found := worker.outcomes(event["event_id"])) == 3 and found
    )
    assert sorted(outcomes) == ["applied", "duplicate", "duplicate"]
    assert contact_row(pg_engine, contact.id).version == 2
    assert len(call_history(pg_engine, contact.id)) == 1
    assert count(pg_engine, processed_events) == 1


def test_an_older_event_delivered_after_a_newer_one_leaves_the_newer_values(
    worker: Worker, pg_engine: Engine, pg_team: Team
) -> None:
    contact = make_contact(pg_engine, pg_team.id)
    newer = call_event(
        pg_team.id,
        minutes=10,
        contact_id=contact.id,
        extraction={"custom_fields": {"budget": 2}, "contact": {"job_title": "CTO"}},
    )
    older = call_event(
        pg_team.id,
        minutes=0,
        contact_id=contact.id,
        extraction={"custom_fields": {"budget": 1}, "contact": {"job_title": "Owner"}},
    )

    publish_event(newer, app=worker.app)
    assert wait_processed(worker, pg_engine, newer["event_id"]).outcome == "applied"
    publish_event(older, app=worker.app)
    assert wait_processed(worker, pg_engine, older["event_id"]).outcome == "no_change"

    row = contact_row(pg_engine, contact.id)
    assert (row.custom_fields, row.job_title, row.version) == ({"budget": 2}, "CTO", 2)
    assert len(call_history(pg_engine, contact.id)) == 2


def test_200_events_on_20_contacts_lose_no_update_and_end_as_in_time_order(
    worker: Worker, pg_engine: Engine, pg_team: Team
) -> None:
    rng = random.Random(20)
    people = [make_contact(pg_engine, pg_team.id, first_name=f"P{i}") for i in range(20)]
    before = {p.id: contact_row(pg_engine, p.id) for p in people}
    events = [
        call_event(
            pg_team.id,
            minutes=rng.randrange(0, 120),  # ties happen: the event id breaks them
            contact_id=rng.choice(people).id,
            outcome=rng.choice(["completed", "completed", "voicemail", "no_answer"]),
            extraction={
                "custom_fields": {
                    "budget": {"value": rng.randrange(1000), "confidence": rng.choice([0.3, 0.9])},
                    "product": rng.choice(["solar", "battery", None]),
                },
                "contact": {
                    "job_title": rng.choice(["CTO", "Owner", "CFO"]),
                    "email": rng.choice([None, "a@example.com", "b@example.org"]),
                },
                "lead_status": rng.choice([None, None, "qualified", "unqualified", "contacted"]),
                "do_not_call": rng.choice([None, None, None, False, True]),
                "tags": rng.sample(["hot", "solar", "callback", "roof"], k=rng.randrange(3)),
            },
        )
        for _ in range(200)
    ]
    deliveries = events + rng.sample(events, 20)  # redeliveries, as Redis may make
    rng.shuffle(deliveries)

    for event in deliveries:
        publish_event(event, app=worker.app)

    worker.wait("200 events in the inbox", lambda: count(pg_engine, processed_events) == 200)
    worker.wait_drained()
    for person in people:
        mine = [e for e in events if e["contact_id"] == person.id]
        row = contact_row(pg_engine, person.id)
        assert state_of(row) == merged_in_time_order(before[person.id], mine), person.id
        records = assert_versions_contiguous(pg_engine, person.id)
        assert sorted(r.event_id for r in records if r.source == "call") == sorted(
            e["event_id"] for e in mine
        )
    logged = Counter(
        r["outcome"] for r in worker.log() if r.get("event_id") in {e["event_id"] for e in events}
    )
    assert logged["duplicate"] == 20
    assert logged["applied"] + logged["no_change"] == 200


def test_bad_events_are_dead_lettered_with_their_reason_while_the_worker_keeps_serving(
    worker: Worker, pg_engine: Engine, pg_team: Team, pg_other_team: Team
) -> None:
    ada = make_contact(pg_engine, pg_team.id, phone="+12025551234")
    theirs = make_contact(pg_engine, pg_other_team.id)
    make_contact(pg_engine, pg_team.id, first_name="Sam", phone="+12025550143")
    make_contact(pg_engine, pg_team.id, first_name="Sue", phone_secondary="+12025550143")
    malformed = call_event(pg_team.id, contact_id=ada.id, outcome="exploded")
    del malformed["call_id"]
    expected = {
        "invalid_payload": malformed,
        "unsupported_schema_version": call_event(pg_team.id, contact_id=ada.id, schema_version=2),
        "contact_not_found": call_event(pg_team.id, contact_id="ct_nobody"),
        "contact_not_found (other team)": call_event(pg_team.id, contact_id=theirs.id),
        "ambiguous_contact": call_event(pg_team.id, phone="(202) 555-0143"),
        "occurred_in_future": call_event(
            pg_team.id,
            contact_id=ada.id,
            occurred_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        ),
    }
    # JSON can carry a lone surrogate ("\ud800"), which PostgreSQL cannot store as such.
    unstorable = call_event(pg_team.id, contact_id=ada.id, extraction={"summary": "a\ud800b"})
    for payload in [*expected.values(), unstorable]:  # publish_event would refuse to send them
        worker.app.send_task(TASK_APPLY, args=[payload], queue=QUEUE)
    worker.app.send_task(TASK_APPLY, args=["not an event"], queue=QUEUE)
    worker.app.send_task(TASK_APPLY_BATCH, args=[{"not": "a list"}], queue=QUEUE)
    good = call_event(pg_team.id, contact_id=ada.id, extraction={"tags": ["still-serving"]})
    publish_event(good, app=worker.app)

    assert wait_processed(worker, pg_engine, good["event_id"]).outcome == "applied"
    assert contact_row(pg_engine, ada.id).tags == ["still-serving"]
    worker.wait("9 dead letters", lambda: count(pg_engine, dead_letters) == 9)
    letters = letters_by_event(pg_engine)
    for reason, payload in expected.items():
        letter = letters[payload["event_id"]]
        assert letter.reason == reason.split(" ")[0]
        assert letter.payload == payload
        assert letter.message
    parked_as_text = letters[unstorable["event_id"]]
    assert parked_as_text.reason == "invalid_payload"
    assert json.loads(parked_as_text.payload["raw_json"]) == unstorable
    with pg_engine.connect() as conn:
        anonymous = {
            json.dumps(row.payload, sort_keys=True): row.reason
            for row in conn.execute(select(dead_letters).where(dead_letters.c.event_id.is_(None)))
        }
    assert anonymous == {
        json.dumps("not an event"): "invalid_payload",
        json.dumps({"args": [{"not": "a list"}], "kwargs": {}}, sort_keys=True): "invalid_payload",
    }
    assert contact_row(pg_engine, theirs.id).version == 1
    assert contact_row(pg_engine, ada.id).version == 2


def test_a_batch_message_applies_each_event_with_its_own_guarantees(
    worker: Worker, pg_engine: Engine, pg_team: Team
) -> None:
    rng = random.Random(3)
    people = [make_contact(pg_engine, pg_team.id, first_name=f"B{i}") for i in range(3)]
    before = {p.id: contact_row(pg_engine, p.id) for p in people}
    events = [
        call_event(
            pg_team.id,
            minutes=rng.randrange(60),
            contact_id=people[i % 3].id,
            outcome=rng.choice(["completed", "busy", "voicemail", "no_answer"]),
            extraction={
                "custom_fields": {"budget": rng.randrange(100)},
                "contact": {"job_title": rng.choice(["CTO", "Owner"])},
                "tags": [rng.choice(["x", "y", "z"])],
            },
        )
        for i in range(30)
    ]
    bad = call_event(pg_team.id, contact_id="ct_nobody")

    with EventPublisher(app=worker.app, linger_seconds=0, validate_events=False) as publisher:
        for event in [*events[:15], bad, events[3], *events[15:]]:
            publisher.publish(event)
    assert (publisher.messages_sent, publisher.events_sent) == (1, 32)

    worker.wait("31 events in the inbox", lambda: count(pg_engine, processed_events) == 31)
    worker.wait_drained()
    assert letters_by_event(pg_engine)[bad["event_id"]].reason == "contact_not_found"
    assert count(pg_engine, dead_letters) == 1
    for person in people:
        mine = [e for e in events if e["contact_id"] == person.id]
        assert state_of(contact_row(pg_engine, person.id)) == merged_in_time_order(
            before[person.id], mine
        )
        records = assert_versions_contiguous(pg_engine, person.id)
        assert sorted(r.event_id for r in records if r.source == "call") == sorted(
            e["event_id"] for e in mine
        )
    # The worker wrote the calls ledger in the same transactions: one row per call, none for
    # the dead letter or the duplicate, and each contact's three call fields from its rows.
    rows = call_rows(pg_engine, pg_team.id)
    assert sorted(r.event_id for r in rows) == sorted(e["event_id"] for e in events)
    for person in people:
        mine = [e for e in events if e["contact_id"] == person.id]
        newest = max(mine, key=lambda e: (e["occurred_at"], e["event_id"]))
        row = contact_row(pg_engine, person.id)
        assert (row.call_count, row.last_called_at, row.last_call_outcome) == (
            len(mine),
            datetime.fromisoformat(newest["occurred_at"]),
            newest["outcome"],
        )


def test_a_message_pushed_by_a_raw_broker_client_is_applied(
    worker: Worker, pg_engine: Engine, pg_team: Team
) -> None:
    contact = make_contact(pg_engine, pg_team.id, phone="+12025551234")
    event = call_event(pg_team.id, phone="+12025551234", extraction=EXTRACTION)

    worker.broker.push_task([event])

    claimed = wait_processed(worker, pg_engine, event["event_id"])
    assert (claimed.outcome, claimed.contact_id) == ("applied", contact.id)
    row = contact_row(pg_engine, contact.id)
    assert (row.custom_fields["budget"], row.job_title, row.version) == (50000, "CTO", 2)
