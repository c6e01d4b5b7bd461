"""The unit of work, and the services behind it that write in their caller's transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from contact_sync.accounts.teams import create_team
from contact_sync.clock import utcnow
from contact_sync.db.tables import dead_letters, delivery_attempts, teams
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.ops.dead_letters import park
from contact_sync.worker.poison import count_attempt, forget


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_unit_of_work_that_is_committed_keeps_its_writes(engine: Engine) -> None:
    with unit_of_work(engine) as uow:
        create_team(uow.conn, name="Kept", region="US")
        uow.commit()
    assert _count(engine, teams) == 1


def test_a_unit_of_work_left_without_commit_rolls_back(engine: Engine) -> None:
    with unit_of_work(engine) as uow:
        create_team(uow.conn, name="Dropped", region="US")
    assert _count(engine, teams) == 0


def _create_then_fail(engine: Engine) -> None:
    with unit_of_work(engine) as uow:
        create_team(uow.conn, name="Dropped", region="US")
        uow.conn.exec_driver_sql("SELECT no_such_column FROM teams")


def test_a_unit_of_work_left_by_an_error_rolls_back_and_the_error_goes_on(engine: Engine) -> None:
    with pytest.raises(DBAPIError):
        _create_then_fail(engine)
    assert _count(engine, teams) == 0


def test_committing_outside_the_block_is_refused(engine: Engine) -> None:
    uow = unit_of_work(engine)
    with pytest.raises(RuntimeError):
        uow.commit()


def test_park_writes_in_the_callers_transaction_only(engine: Engine) -> None:
    payloads = [{"event_id": "evt_a", "team_id": None}, {"event_id": "evt_b"}]
    with unit_of_work(engine) as uow:
        ids = park(
            uow.conn, payloads=payloads, reason="invalid_payload", message="bad", now=utcnow()
        )
        assert len(set(ids)) == 2
    assert _count(engine, dead_letters) == 0  # rolled back with the unit


def test_park_keys_a_wrapped_payload_by_the_event_it_carries(engine: Engine) -> None:
    wrapped = {"task": "nope", "event": {"event_id": "evt_inside"}, "body": "..."}
    with unit_of_work(engine) as uow:
        park(
            uow.conn,
            payloads=[wrapped],
            events=[wrapped["event"]],
            reason="invalid_payload",
            message="unknown task",
            now=utcnow(),
        )
        uow.commit()
    with engine.connect() as conn:
        letter = conn.execute(select(dead_letters)).one()
    assert (letter.event_id, letter.payload) == ("evt_inside", wrapped)


def test_delivery_counts_are_kept_only_when_their_unit_commits(engine: Engine) -> None:
    with unit_of_work(engine) as uow:
        assert count_attempt(uow.conn, message_key="m1") == 2
    assert _count(engine, delivery_attempts) == 0
    for expected in (2, 3):
        with unit_of_work(engine) as uow:
            assert count_attempt(uow.conn, message_key="m1") == expected
            uow.commit()
    with unit_of_work(engine) as uow:
        forget(uow.conn, message_key="m1")
        uow.commit()
    assert _count(engine, delivery_attempts) == 0
