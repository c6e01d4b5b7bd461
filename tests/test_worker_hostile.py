"""Messages Celery itself cannot deliver are parked, not dropped, and the worker keeps serving.

On both brokers: Redis and RabbitMQ.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import create_team
from contact_sync.db.tables import dead_letters, processed_events
from tests.brokers import BROKERS, Broker, broker_for
from tests.factories import call_event, task_body
from tests.workers import start_worker, stop_worker


def _wait_for(engine: Engine, stmt: Any, expected: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    value = -1
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            value = int(conn.execute(stmt).scalar_one())
        if value >= expected:
            return value
        time.sleep(0.1)
    return value


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    broker = broker_for(request, request.param, redis_db=8)
    yield broker
    broker.close()


@pytest.fixture
def worker(
    pg_engine: Engine, postgres_url: str, broker: Broker, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(postgres_url, broker.url, tmp_path / "worker.log", wait_ready=False)
    yield process
    stop_worker(process)


@pytest.mark.slow
def test_undecodable_unknown_and_nul_messages_are_dead_lettered_and_the_worker_serves_on(
    pg_engine: Engine, broker: Broker, worker: subprocess.Popen[bytes]
) -> None:
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Hostile")
    good = call_event(
        team.id,
        event_id="evt_after_the_storm",
        call_id="call_1",
        phone="+12025550199",
        occurred_at=datetime.now(UTC).isoformat(),
    )
    nul_event = {**good, "event_id": "evt_nul", "call_id": "call\x00nul"}
    broker.push(b"{this is not json", "contact_sync.apply_call_completed")
    broker.push(json.dumps([[good], {}, {}]).encode(), "contact_sync.no_such_task")
    broker.push(task_body([nul_event]), "contact_sync.apply_call_completed")
    broker.push(task_body([good]), "contact_sync.apply_call_completed")
    count = select(func.count()).select_from(dead_letters)
    assert _wait_for(pg_engine, count, 3) == 3
    applied = (
        select(func.count())
        .select_from(processed_events)
        .where(
            processed_events.c.event_id == good["event_id"], processed_events.c.outcome == "applied"
        )
    )
    assert _wait_for(pg_engine, applied, 1) == 1
    with pg_engine.connect() as conn:
        rows = conn.execute(
            select(dead_letters.c.reason, dead_letters.c.payload, dead_letters.c.message)
        ).all()
    assert {r.reason for r in rows} == {"invalid_payload"}
    messages = " | ".join(r.message for r in rows)
    assert "could not be decoded" in messages
    assert "unknown task" in messages
    raw = [r.payload for r in rows if isinstance(r.payload, dict) and "raw_body" in r.payload]
    assert raw == [{"raw_body": "{this is not json"}]  # kept exactly as received
    assert worker.poll() is None
