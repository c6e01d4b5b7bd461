"""Messages Celery itself cannot deliver are parked, not dropped, and the worker keeps serving."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select

from contact_sync.db.tables import dead_letters, processed_events
from contact_sync.teams import create_team

QUEUE = "contact_sync.events"


def _envelope(body: bytes, task: str, content_type: str = "application/json") -> str:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {"lang": "py", "task": task, "id": str(uuid.uuid4())},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "delivery_mode": 2,
                "priority": 0,
            },
        }
    )


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


@pytest.fixture
def broker(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + "/8"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def worker(pg_engine: Engine, postgres_url: str, broker: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "CONTACT_SYNC_DATABASE_URL": postgres_url,
        "CONTACT_SYNC_BROKER_URL": broker,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "contact_sync.cli", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_undecodable_unknown_and_nul_messages_are_dead_lettered_and_the_worker_serves_on(
    pg_engine: Engine, broker: str, worker: subprocess.Popen[bytes]
) -> None:
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Hostile")
    client = redis.Redis.from_url(broker)
    good = {
        "event_id": "evt_after_the_storm",
        "type": "call.completed",
        "schema_version": 1,
        "team_id": team.id,
        "call_id": "call_1",
        "phone": "+12025550199",
        "occurred_at": datetime.now(UTC).isoformat(),
        "outcome": "completed",
    }
    nul_event = {**good, "event_id": "evt_nul", "call_id": "call\x00nul"}
    args = [[nul_event], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    client.lpush(QUEUE, _envelope(b"{this is not json", "contact_sync.apply_call_completed"))
    client.lpush(
        QUEUE, _envelope(json.dumps([[good], {}, {}]).encode(), "contact_sync.no_such_task")
    )
    client.lpush(QUEUE, _envelope(json.dumps(args).encode(), "contact_sync.apply_call_completed"))
    client.lpush(
        QUEUE,
        _envelope(
            json.dumps(
                [[good], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
            ).encode(),
            "contact_sync.apply_call_completed",
        ),
    )
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
