"""The worker's logs carry no personal data of the events it handles.

Celery's log line of a task that fails or is rejected carries the task's
arguments: the whole event (names, phones, emails, what was said on the call).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from contact_sync.accounts.teams import Team
from contact_sync.db.tables import contacts
from tests.brokers import broker_for
from tests.factories import call_event
from tests.workers import start_worker, stop_worker

EMAIL = "ada.lovelace.secret@example.org"
PHONE = "+12025550187"
# Messages of the one-event task are grouped, and requeued by the worker's strategy without
# a line of Celery's; a batch message is an ordinary Celery task.
TASK = "contact_sync.apply_call_completed_batch"


def _records(log: Path) -> list[dict[str, Any]]:
    records = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


@pytest.mark.slow
def test_a_rejected_task_is_logged_without_its_arguments(
    request: pytest.FixtureRequest,
    pg_engine: Engine,
    pg_team: Team,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    broker = broker_for(request, "redis", redis_db=11)
    log = tmp_path / "worker.log"
    # Each statement waiting for a lock gives up after 200 ms (a transient error), and a
    # transient error is not retried in place: the task is rejected at once and requeued,
    # which Celery logs with the task's arguments.
    worker = start_worker(
        f"{postgres_url}?options=-c%20lock_timeout%3D200",
        broker.url,
        log,
        CONTACT_SYNC_TRANSIENT_RETRY_SECONDS="0",
    )
    try:
        event = call_event(
            pg_team.id,
            phone=PHONE,
            extraction={
                "contact": {"email": EMAIL},
                "summary": f"Ada ({EMAIL}, {PHONE}) asked for a callback.",
            },
        )
        with pg_engine.connect() as blocker:
            blocker.execute(text("LOCK TABLE processed_events IN ACCESS EXCLUSIVE MODE"))
            broker.push_task([[event]], TASK)
            deadline = time.monotonic() + 60
            while not any(r["logger"] == "celery.app.trace" for r in _records(log)):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            blocker.rollback()
        deadline = time.monotonic() + 60
        while True:  # the lock is gone: the event applies
            with pg_engine.connect() as conn:
                emails = conn.execute(select(contacts.c.email)).scalars().all()
            if emails:
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert emails == [EMAIL]
    finally:
        stop_worker(worker)

    rejected = [r for r in _records(log) if r["logger"] == "celery.app.trace"]
    assert rejected, "the task was never rejected: nothing was tested"
    assert all(r["level"] == "warning" and TASK in r["message"] for r in rejected)
    assert all(r["data"]["name"] == TASK and r["data"]["id"] for r in rejected)
    text_of_log = log.read_text(errors="replace")
    assert EMAIL not in text_of_log
    assert "5550187" not in text_of_log


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as JSON; fails naming the first line that is not."""
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
    return records


@pytest.mark.slow
def test_every_line_a_worker_writes_on_stdout_and_stderr_is_json(
    request: pytest.FixtureRequest, postgres_url: str, pg_team: Team, tmp_path: Path
) -> None:
    broker = broker_for(request, "redis", redis_db=11)
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    worker = start_worker(postgres_url, broker.url, out, stderr_path=err)
    try:
        broker.push_task([call_event(pg_team.id, phone=PHONE)])
        broker.push(b"\xff not JSON")
        deadline = time.monotonic() + 60
        while not broker.drained():
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
    finally:
        stop_worker(worker)
    assert worker.returncode == 0
    records = _json_lines(out) + _json_lines(err)
    [start] = [r for r in records if r["message"] == "worker starting"]
    assert start["queues"] == ["contact_sync.events"]
    assert start["concurrency"] == 1
    assert start["hostname"].startswith("celery@")
    assert start["broker"] == broker.url
    assert any(r["message"].endswith(" ready.") for r in records)
    assert any(r["message"] == "worker: Warm shutdown (MainProcess)" for r in records)


@pytest.mark.slow
def test_a_batch_logs_each_event_with_its_call_id_and_its_duration_once(
    request: pytest.FixtureRequest, postgres_url: str, pg_team: Team, tmp_path: Path
) -> None:
    broker = broker_for(request, "redis", redis_db=11)
    log = tmp_path / "worker.log"
    worker = start_worker(postgres_url, broker.url, log)
    events = [
        call_event(pg_team.id, phone=PHONE),
        call_event(pg_team.id, phone="+12025550188", extraction={"contact": {"email": EMAIL}}),
        call_event(pg_team.id, phone="not a number"),
    ]
    try:
        broker.push_task([events], TASK)
        deadline = time.monotonic() + 60
        while not any(r["message"] == "message done" for r in _records(log)):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        stop_worker(worker)
    records = _records(log)
    per_event = [r for r in records if r.get("event_id") in {e["event_id"] for e in events}]
    assert {(r["event_id"], r["call_id"]) for r in per_event} == {
        (e["event_id"], e["call_id"]) for e in events
    }
    assert sorted(r["outcome"] for r in per_event) == ["applied", "applied", "dead_lettered"]
    assert all("duration_ms" not in r for r in per_event)
    [done] = [r for r in records if r["message"] == "message done"]
    assert done["events"] == 3
    assert done["duration_ms"] > 0
    text_of_log = log.read_text(errors="replace")
    assert EMAIL not in text_of_log
    assert "5550187" not in text_of_log
