"""The inbox of processed events: what makes at-least-once delivery exactly-once in effect.

An event claims its ``event_id`` before anything else in its transaction;
a second delivery's claim waits for the first transaction and then finds
the row. A row left by a dead-lettered attempt is taken over, so a replay,
or a corrected redelivery with the same id, still applies once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contact_sync.db.tables import processed_events
from contact_sync.events import CallCompleted


def _insert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def _same_team(stored: Any, incoming: Any) -> Any:
    """The stored row is the incoming event's team's, or has no team to say otherwise."""
    return or_(stored.is_(None), stored == incoming)


def claim(conn: Connection, events: Sequence[CallCompleted], now: datetime) -> set[str]:
    """Claim distinct events in one statement; returns the ids claimed now.

    The ids not returned were applied (or found no change) before.
    """
    if not events:
        return set()
    rows = [
        {"event_id": e.event_id, "team_id": e.team_id, "outcome": "applied", "processed_at": now}
        for e in sorted(events, key=lambda e: e.event_id)  # one lock order for every worker
    ]
    # Executed with a list of rows: SQLAlchemy sends them as multi-row
    # statements ("insertmanyvalues") from one cached compiled form.
    new = _insert(conn)(processed_events)
    stmt = new.on_conflict_do_update(
        index_elements=[processed_events.c.event_id],
        set_={"outcome": "applied", "processed_at": now, "team_id": new.excluded.team_id},
        # Only a dead-lettered attempt of this team's event (or of a payload whose
        # team could not be read) is taken over: another team's event that
        # carries the same id must not swallow that team's replay.
        where=(processed_events.c.outcome == "dead_lettered")
        & _same_team(processed_events.c.team_id, new.excluded.team_id),
    ).returning(processed_events.c.event_id)
    return {row.event_id for row in conn.execute(stmt, rows)}


def record_outcomes(conn: Connection, outcomes: Iterable[tuple[str, str | None, str]]) -> None:
    """Set ``(event_id, contact_id, outcome)`` on claimed rows, in one round trip."""
    params = [{"b_event": e, "b_contact": c, "b_outcome": o} for e, c, o in outcomes]
    if params:
        conn.execute(
            update(processed_events)
            .where(processed_events.c.event_id == bindparam("b_event"))
            .values(contact_id=bindparam("b_contact"), outcome=bindparam("b_outcome")),
            params,
        )


def mark_dead_lettered(
    conn: Connection, *, event_id: str, team_id: str | None, now: datetime
) -> None:
    """Record that the event was parked; an existing row is left alone."""
    values = {
        "event_id": event_id,
        "team_id": team_id,
        "contact_id": None,
        "outcome": "dead_lettered",
        "processed_at": now,
    }
    new = _insert(conn)(processed_events).values(values)
    conn.execute(
        new.on_conflict_do_update(
            index_elements=[processed_events.c.event_id],
            set_={"outcome": "dead_lettered", "processed_at": now},
            # Only a claim this transaction made (still "applied", no contact)
            # is turned back; a row of an earlier success, or another team's
            # row for the same id, is never touched.
            where=processed_events.c.contact_id.is_(None)
            & _same_team(processed_events.c.team_id, new.excluded.team_id),
        )
    )
