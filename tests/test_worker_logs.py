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

from contact_sync.db.tables import contacts
from contact_sync.teams import Team
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
