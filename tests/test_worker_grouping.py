"""One-event messages are applied in groups: one transaction, each message acked after it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select

from contact_sync.db.tables import contact_history, processed_events
from contact_sync.settings import Settings
from contact_sync.teams import create_team
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, create_app
from tests.conftest import call_event
from tests.workers import start_worker, stop_worker


@pytest.mark.slow
def test_queued_one_event_messages_share_transactions_and_each_applies_once(
    pg_engine: Engine, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    broker = redis_url.rsplit("/", 1)[0] + "/10"
    client = redis.Redis.from_url(broker)
    client.flushdb()
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Grouping")
    app = create_app(Settings(broker_url=broker))
    events = [call_event(team.id, minutes=i, phone=f"+1202555{1000 + i:04d}") for i in range(60)]
    with app.producer_or_acquire() as producer:
        for event in events:
            app.send_task(TASK_APPLY, args=[event], queue=QUEUE, producer=producer)
        app.send_task(TASK_APPLY, args=[events[0]], queue=QUEUE, producer=producer)  # again
    worker = start_worker(postgres_url, broker, tmp_path / "worker.log", wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and done < len(events):
            with pg_engine.connect() as conn:
                done = conn.execute(select(func.count()).select_from(processed_events)).scalar_one()
            time.sleep(0.1)
        assert done == len(events)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (client.llen(QUEUE) or client.hlen("unacked")):
            time.sleep(0.1)
        assert client.llen(QUEUE) == 0
        assert client.hlen("unacked") == 0  # every message acknowledged after its commit
        with pg_engine.connect() as conn:
            transactions = conn.execute(
                select(func.count(func.distinct(processed_events.c.processed_at)))
            ).scalar_one()
            records = conn.execute(select(func.count()).select_from(contact_history)).scalar_one()
        assert transactions <= len(events) // 4  # grouped, not one transaction each
        assert records == len(events)  # and still one history record per event
        assert worker.poll() is None
    finally:
        stop_worker(worker)
