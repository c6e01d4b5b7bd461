"""The inbox of processed events: what makes at-least-once delivery exactly-once in effect.

An event claims its ``(team_id, event_id)`` key before anything else in its
transaction; a second delivery's claim waits for the first transaction and
then finds the row. The key holds the team (docs/design.md §2; README,
"The event path"): event ids are unique within a team's pipeline, so the
same id in another team is another event and applies on its own. A row
left by a dead-lettered attempt is taken over, so a replay, or a corrected
redelivery with the same id, still applies once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contact_sync.calls.events import CallCompleted
from contact_sync.db.bulk import is_postgresql, rows_parameter, rows_source
from contact_sync.db.tables import processed_events

EventKey = tuple[str, str]
"""``(team_id, event_id)``: what identifies an event."""

_KEY = [processed_events.c.team_id, processed_events.c.event_id]
_COLUMNS = ("team_id", "event_id", "outcome", "processed_at")
_OUTCOME = ("team_id", "event_id", "contact_id", "outcome")


def key_of(event: CallCompleted) -> EventKey:
    """The event's inbox key."""
    return (event.team_id, event.event_id)


def _insert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def claim(conn: Connection, events: Sequence[CallCompleted], now: datetime) -> set[EventKey]:
    """Claim distinct events in one statement; returns the keys claimed now.

    The keys not returned were applied (or found no change) before.
    """
    if not events:
        return set()
    rows = [
        {"team_id": e.team_id, "event_id": e.event_id, "outcome": "applied", "processed_at": now}
        for e in sorted(events, key=key_of)  # one lock order for every worker
    ]
    if is_postgresql(conn):  # the rows as JSON, in lock order (db/bulk.py)
        params = {**rows_parameter(_COLUMNS, rows), "b_now": now}
        result = conn.execute(_claim_statement(), params)
    else:  # SQLite: a list of rows, sent as multi-row statements ("insertmanyvalues")
        stmt = (
            sqlite_insert(processed_events)
            .on_conflict_do_update(
                index_elements=_KEY,
                set_={"outcome": "applied", "processed_at": now},
                where=processed_events.c.outcome == "dead_lettered",
            )
            .returning(*_KEY)
        )
        result = conn.execute(stmt, rows)
    return {(row.team_id, row.event_id) for row in result}


@lru_cache(maxsize=1)
def _claim_statement() -> Any:
    """PostgreSQL's claim: built once (db/bulk.py, ``rows_source``)."""
    insert = pg_insert(processed_events).from_select(
        _COLUMNS, rows_source(processed_events, _COLUMNS)
    )
    now = bindparam("b_now", type_=processed_events.c.processed_at.type)
    return insert.on_conflict_do_update(
        index_elements=_KEY,
        set_={"outcome": "applied", "processed_at": now},
        where=processed_events.c.outcome == "dead_lettered",
    ).returning(*_KEY)


@lru_cache(maxsize=1)
def _outcomes_statement() -> Any:
    """PostgreSQL's outcomes update: built once (db/bulk.py, ``rows_source``)."""
    given = rows_source(processed_events, _OUTCOME).subquery()
    return (
        update(processed_events)
        .where(
            processed_events.c.team_id == given.c.team_id,
            processed_events.c.event_id == given.c.event_id,
        )
        .values(contact_id=given.c.contact_id, outcome=given.c.outcome)
    )


def record_outcomes(conn: Connection, outcomes: Iterable[tuple[EventKey, str | None, str]]) -> None:
    """Set ``(key, contact_id, outcome)`` on claimed rows, in one round trip."""
    rows = [
        {"team_id": team, "event_id": event, "contact_id": contact, "outcome": outcome}
        for (team, event), contact, outcome in outcomes
    ]
    if not rows:
        return
    if is_postgresql(conn):  # one statement, the rows as JSON (db/bulk.py)
        conn.execute(_outcomes_statement(), rows_parameter(_OUTCOME, rows))
        return
    conn.execute(
        update(processed_events)
        .where(
            processed_events.c.team_id == bindparam("b_team_id"),
            processed_events.c.event_id == bindparam("b_event_id"),
        )
        .values(contact_id=bindparam("b_contact_id"), outcome=bindparam("b_outcome")),
        [{f"b_{name}": value for name, value in row.items()} for row in rows],
    )


def mark_dead_lettered(
    conn: Connection, *, event_id: str, team_id: str | None, now: datetime
) -> None:
    """Record that the event was parked; an existing row is left alone.

    A payload whose team cannot be read has no key: its dead letter is the
    only record, and no claim of any team's event could have matched it.
    """
    if team_id is None:
        return
    values = {
        "team_id": team_id,
        "event_id": event_id,
        "contact_id": None,
        "outcome": "dead_lettered",
        "processed_at": now,
    }
    conn.execute(
        _insert(conn)(processed_events)
        .values(values)
        .on_conflict_do_update(
            index_elements=_KEY,
            set_={"outcome": "dead_lettered", "processed_at": now},
            # Only a claim this transaction made (still "applied", no contact)
            # is turned back; a row of an earlier success is never touched.
            where=processed_events.c.contact_id.is_(None),
        )
    )
