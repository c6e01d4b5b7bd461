"""One-event messages are applied in groups: one transaction, each message acked after it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kombu.message import Message
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import create_team
from contact_sync.db.tables import contact_history, processed_events
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, create_app
from contact_sync.worker.grouping import GROUP_MAX, group_size, strategy
from tests.brokers import BROKERS, broker_for
from tests.factories import call_event
from tests.workers import start_worker, stop_worker


@pytest.mark.slow
@pytest.mark.parametrize("kind", BROKERS)
def test_queued_one_event_messages_share_transactions_and_each_applies_once(
    request: pytest.FixtureRequest, kind: str, pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    broker = broker_for(request, kind, redis_db=10)
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Grouping")
    app = create_app(Settings(broker_url=broker.url))
    events = [call_event(team.id, minutes=i, phone=f"+1202555{1000 + i:04d}") for i in range(60)]
    with app.producer_or_acquire() as producer:
        for event in events:
            app.send_task(TASK_APPLY, args=[event], queue=QUEUE, producer=producer)
        app.send_task(TASK_APPLY, args=[events[0]], queue=QUEUE, producer=producer)  # again
    worker = start_worker(postgres_url, broker.url, tmp_path / "worker.log", wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and done < len(events):
            with pg_engine.connect() as conn:
                done = conn.execute(select(func.count()).select_from(processed_events)).scalar_one()
            time.sleep(0.1)
        assert done == len(events)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and broker.held():
            time.sleep(0.1)
        assert broker.held() == 0  # every message acknowledged after its commit
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
        app.close()
        broker.close()


class _Pool:
    """A pool of ``limit`` processes that only records what it is given."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.jobs: list[tuple[list[Any], Any, Any]] = []

    def apply_async(
        self, _fn: Any, args: Any, callback: Any, error_callback: Any, **_: Any
    ) -> None:
        self.jobs.append((args[0], callback, error_callback))


class _Timer:
    def __init__(self) -> None:
        self.due: list[Any] = []

    def call_after(self, _seconds: float, fn: Any) -> None:
        self.due.append(fn)

    def fire(self) -> None:
        due, self.due = self.due, []
        for fn in due:
            fn()


def _message(n: int) -> Message:
    """A one-event task message as the broker hands it to the strategy."""
    return Message(
        body=json.dumps([[{"event_id": f"evt_{n}"}], {}, {}]).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        headers={"id": f"task-{n}", "task": TASK_APPLY},
        delivery_info={},
        properties={},
    )


def _consumer(pool: _Pool, timer: _Timer) -> SimpleNamespace:
    return SimpleNamespace(
        pool=pool, timer=timer, connection_errors=(), hostname="test@here", event_dispatcher=None
    )


def _strategy(pool: _Pool, timer: _Timer, multiplier: int = 0) -> Any:
    app = create_app(Settings(broker_url="memory://"))
    app.conf.worker_prefetch_multiplier = multiplier
    return strategy(app.tasks[TASK_APPLY], app, _consumer(pool, timer))


def test_groups_grow_while_every_pool_process_is_busy_and_go_when_one_is_free() -> None:
    pool, timer = _Pool(limit=1), _Timer()
    handle = _strategy(pool, timer)
    acked: list[int] = []
    requeued: list[int] = []

    def deliver(n: int) -> None:
        handle(
            _message(n),
            None,
            lambda *_: acked.append(n),
            lambda *_: requeued.append(n),
            None,
        )

    deliver(0)
    deliver(1)  # same loop turn: one group
    timer.fire()
    assert [[e["event_id"] for (_, _, (e,), _) in job[0]] for job in pool.jobs] == [
        ["evt_0", "evt_1"]
    ]
    for n in range(2, 7):  # the only process is busy: they wait, no flush is scheduled
        deliver(n)
    timer.fire()
    assert len(pool.jobs) == 1
    _, committed, _ = pool.jobs[0]
    committed(None)  # the group committed: acked, and the waiting ones go together at once
    assert acked == [0, 1]
    assert [len(job[0]) for job in pool.jobs] == [2, 5]
    _, _, failed = pool.jobs[1]
    failed(None)  # that process died: every message of the group goes back
    assert requeued == [2, 3, 4, 5, 6]
    deliver(7)  # free again: the linger applies
    timer.fire()
    assert [len(job[0]) for job in pool.jobs] == [2, 5, 1]


def test_a_full_group_goes_even_when_every_process_is_busy() -> None:
    pool, timer = _Pool(limit=1), _Timer()
    handle = _strategy(pool, timer)
    handle(_message(0), None, lambda *_: None, lambda *_: None, None)
    timer.fire()  # the only process is busy from now on
    for n in range(1, 1 + GROUP_MAX):
        handle(_message(n), None, lambda *_: None, lambda *_: None, None)
    assert [len(job[0]) for job in pool.jobs] == [1, GROUP_MAX]


def test_groups_are_sized_so_one_more_than_the_processes_fits_the_prefetch_window() -> None:
    assert group_size(prefetch=128, processes=2) == 42
    assert group_size(prefetch=3, processes=2) == 1
    assert group_size(prefetch=10_000, processes=1) == GROUP_MAX
    pool, timer = _Pool(limit=2), _Timer()
    handle = _strategy(pool, timer, multiplier=6)  # window 12
    for n in range(10):  # one bulk take
        handle(_message(n), None, lambda *_: None, lambda *_: None, None)
    timer.fire()
    assert [len(job[0]) for job in pool.jobs] == [4, 4]  # both processes busy at once
    pool.jobs[0][1](None)
    assert [len(job[0]) for job in pool.jobs] == [4, 4, 2]
