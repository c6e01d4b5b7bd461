"""The worker's first pass: apply what no other transaction holds, defer the rest
(docs/design.md §5).

On PostgreSQL a second connection holds a contact's row, a number's lock or an event
in flight, and the first pass must neither wait for it nor leave a trace of the events
it defers (no claim, no contact); applied afterwards they land as they would have.
Each first pass runs with a ``lock_timeout``: a wait fails the test instead of hanging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Connection, Engine, func, select, text

from contact_sync.accounts.teams import Team
from contact_sync.calls.apply import Outcome, apply_free_payloads, apply_payloads
from contact_sync.db.tables import contacts, processed_events
from contact_sync.settings import Settings
from contact_sync.worker import runtime, tasks
from tests.factories import call_event, contact_row, make_contact

PHONE = "+12025550147"


def first_pass(engine: Engine, payloads: list[Any]) -> tuple[dict[int, Outcome], list[int]]:
    """``apply_free_payloads`` in a committed transaction that may wait 2 s at most."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        started = time.monotonic()
        result = apply_free_payloads(conn, payloads)
        assert time.monotonic() - started < 1.5, "the first pass waited"
    return result


@pytest.fixture
def holder(pg_engine: Engine) -> Iterator[Connection]:
    """A second connection in an open transaction, rolled back after the test."""
    with pg_engine.connect() as conn:
        transaction = conn.begin()
        yield conn
        if transaction.is_active:
            transaction.rollback()


def hold_row(conn: Connection, contact_id: str) -> None:
    conn.execute(select(contacts.c.id).where(contacts.c.id == contact_id).with_for_update())


def deferred_count() -> float:
    return REGISTRY.get_sample_value("contact_sync_deferred_events_total") or 0.0


def claims(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(processed_events.c.event_id)).scalars())


def test_an_event_whose_contact_is_held_is_deferred_and_leaves_no_claim(
    pg_engine: Engine, pg_team: Team, holder: Connection
) -> None:
    held = make_contact(pg_engine, pg_team.id, phone=PHONE)
    free = make_contact(pg_engine, pg_team.id)
    waiting = call_event(pg_team.id, contact_id=held.id, extraction={"tags": ["held"]})
    other = call_event(pg_team.id, contact_id=free.id, extraction={"tags": ["free"]})
    hold_row(holder, held.id)

    outcomes, deferred = first_pass(pg_engine, [waiting, other])

    assert deferred == [0]
    assert [(i, o.outcome, o.contact_id) for i, o in outcomes.items()] == [(1, "applied", free.id)]
    assert claims(pg_engine) == {other["event_id"]}
    assert contact_row(pg_engine, held.id).version == 1
    holder.rollback()
    with pg_engine.begin() as conn:
        [later] = apply_payloads(conn, [waiting])
    assert (later.outcome, later.contact_id) == ("applied", held.id)
    assert contact_row(pg_engine, held.id).tags == ["held"]


def test_an_event_by_number_whose_holder_is_held_is_deferred_not_created_again(
    pg_engine: Engine, pg_team: Team, holder: Connection
) -> None:
    """A skipped row must not read as "nobody has this number": that would make a twin."""
    held = make_contact(pg_engine, pg_team.id, phone=PHONE)
    hold_row(holder, held.id)

    outcomes, deferred = first_pass(pg_engine, [call_event(pg_team.id, phone=PHONE)])

    assert (outcomes, deferred) == ({}, [0])
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 1


def test_an_event_by_secondary_number_whose_holder_is_held_is_deferred(
    pg_engine: Engine, pg_team: Team, holder: Connection
) -> None:
    held = make_contact(pg_engine, pg_team.id, phone="+12025550100", phone_secondary=PHONE)
    hold_row(holder, held.id)

    assert first_pass(pg_engine, [call_event(pg_team.id, phone=PHONE)]) == ({}, [0])


def test_an_unknown_number_another_transaction_is_resolving_is_deferred(
    pg_engine: Engine, pg_team: Team, holder: Connection
) -> None:
    """The number's lock (``calls.resolve``, taken by appliers and upserts) is busy."""
    holder.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"{pg_team.id}:{PHONE}"},
    )
    event = call_event(pg_team.id, phone=PHONE, direction="inbound")

    assert first_pass(pg_engine, [event]) == ({}, [0])
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 0


def test_a_second_delivery_of_an_event_in_flight_is_deferred_then_a_duplicate(
    pg_engine: Engine, pg_team: Team, holder: Connection
) -> None:
    contact = make_contact(pg_engine, pg_team.id)
    event = call_event(pg_team.id, contact_id=contact.id, extraction={"tags": ["once"]})
    [first] = apply_payloads(holder, [event])

    assert first_pass(pg_engine, [event]) == ({}, [0])
    holder.commit()
    with pg_engine.begin() as conn:
        [again] = apply_payloads(conn, [event])
    assert (first.outcome, again.outcome) == ("applied", "duplicate")
    assert contact_row(pg_engine, contact.id).version == 2


def test_nothing_is_deferred_when_nothing_is_held(conn: Connection, acme_team: Team) -> None:
    """Both databases: the first pass is then ``apply_payloads`` (SQLite never defers)."""
    contact = make_contact(conn, acme_team.id, phone=PHONE)
    payloads = [
        call_event(acme_team.id, contact_id=contact.id, extraction={"tags": ["a"]}),
        call_event(acme_team.id, minutes=1, phone=PHONE, extraction={"tags": ["b"]}),
        call_event(acme_team.id, phone="+12025550199", direction="inbound"),
        call_event(acme_team.id, contact_id="nobody"),
    ]
    with conn.begin_nested():
        outcomes, deferred = apply_free_payloads(conn, payloads)

    assert deferred == []
    assert [outcomes[i].outcome for i in range(4)] == [
        "applied",
        "applied",
        "applied",
        "dead_lettered",
    ]
    assert sorted(contact_row(conn, contact.id).tags) == ["a", "b"]


@pytest.fixture
def acme_team(conn: Connection) -> Team:
    from tests.factories import make_team

    return make_team(conn, "Acme Solar")


def test_the_task_applies_the_deferred_after_its_first_commit(
    pg_engine: Engine, pg_team: Team, holder: Connection
) -> None:
    """The worker's unit of work: the second pass waits for the holder, outcomes in order."""
    held = make_contact(pg_engine, pg_team.id)
    free = make_contact(pg_engine, pg_team.id)
    payloads = [
        call_event(pg_team.id, contact_id=held.id, extraction={"tags": ["held"]}),
        call_event(pg_team.id, contact_id=free.id, extraction={"tags": ["free"]}),
    ]
    hold_row(holder, held.id)
    release = threading.Timer(0.5, holder.rollback)
    settings = Settings(database_url=pg_engine.url.render_as_string(hide_password=False))
    before = deferred_count()
    runtime.reset_engine()
    release.start()
    try:
        outcomes = tasks._apply(settings, payloads)
    finally:
        release.join()
        runtime.get_engine(settings).dispose()
        runtime.reset_engine()

    assert [(o.outcome, o.contact_id) for o in outcomes] == [
        ("applied", held.id),
        ("applied", free.id),
    ]
    assert deferred_count() - before == 1
    assert contact_row(pg_engine, held.id).tags == ["held"]
