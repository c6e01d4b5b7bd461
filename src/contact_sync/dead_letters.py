"""Dead letters: events parked with their reason and raw payload, never dropped.

A redelivery of the same bad event bumps ``attempts`` on its open dead
letter instead of adding another, so the table stays a list of problems.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, insert, or_, select, text, update

from contact_sync.db.tables import dead_letters
from contact_sync.events import Reason
from contact_sync.ids import new_id
from contact_sync.storable import has_unstorable


@dataclass(frozen=True)
class DeadLetter:
    """A parked event as ops see it."""

    id: str
    event_id: str | None
    team_id: str | None
    reason: str
    message: str
    payload: Any
    first_seen_at: datetime
    last_seen_at: datetime
    attempts: int
    replayed_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = dict(self.__dict__)
        for key in ("first_seen_at", "last_seen_at", "replayed_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


def storable(payload: Any) -> Any:
    """The payload as a JSON column can hold it.

    PostgreSQL's JSONB cannot hold U+0000, a lone surrogate or a non-finite
    number anywhere; such a
    payload is kept whole as its (ASCII-escaped) JSON text under ``raw_json``
    rather than altered.
    """
    if has_unstorable(payload, numbers=True):
        return {"raw_json": json.dumps(payload)}
    return payload


def record(
    conn: Connection,
    *,
    payload: Any,
    reason: Reason,
    message: str,
    event_id: str | None,
    team_id: str | None,
    now: datetime,
    dead_letter_id: str | None = None,
) -> str:
    """Park ``payload``; returns the dead letter's id.

    ``dead_letter_id`` (a replay) or an open dead letter of the same event is
    updated rather than duplicated.
    """
    existing = dead_letter_id
    if existing is None and event_id is not None and conn.dialect.name == "postgresql":
        # Two deliveries of the same bad event, parked at the same moment by two
        # workers, would both find no open letter and add one each: take turns.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"dead_letter:{event_id}"},
        )
    if existing is None and event_id is not None:
        # The same event is the same id from the same team (or from a payload
        # whose team could not be read): another team's event that carries
        # the id must not rewrite this team's letter.
        team: ColumnElement[bool] = dead_letters.c.team_id.is_(None)
        if team_id is not None:
            team = or_(team, dead_letters.c.team_id == team_id)
        existing = conn.execute(
            select(dead_letters.c.id)
            .where(dead_letters.c.event_id == event_id, dead_letters.c.replayed_at.is_(None), team)
            .limit(1)
        ).scalar_one_or_none()
    if existing is not None:
        conn.execute(
            update(dead_letters)
            .where(dead_letters.c.id == existing)
            .values(
                team_id=func.coalesce(dead_letters.c.team_id, team_id),
                reason=reason,
                message=message[:2000],
                payload=storable(payload),
                last_seen_at=now,
                attempts=dead_letters.c.attempts + 1,
                replayed_at=None,
            )
        )
        return existing
    new = new_id()
    conn.execute(
        insert(dead_letters).values(
            id=new,
            event_id=event_id,
            team_id=team_id,
            reason=reason,
            message=message[:2000],
            payload=storable(payload),
            first_seen_at=now,
            last_seen_at=now,
            attempts=1,
            replayed_at=None,
        )
    )
    return new


def mark_replayed(conn: Connection, *, dead_letter_id: str, now: datetime) -> None:
    """Close a dead letter whose event has now gone through."""
    conn.execute(
        update(dead_letters).where(dead_letters.c.id == dead_letter_id).values(replayed_at=now)
    )


def list_dead_letters(conn: Connection, *, include_replayed: bool = True) -> list[DeadLetter]:
    """Dead letters, newest first."""
    stmt = select(dead_letters).order_by(dead_letters.c.last_seen_at.desc(), dead_letters.c.id)
    if not include_replayed:
        stmt = stmt.where(dead_letters.c.replayed_at.is_(None))
    return [DeadLetter(**row._mapping) for row in conn.execute(stmt)]


def get_dead_letter(conn: Connection, *, dead_letter_id: str) -> DeadLetter | None:
    """One dead letter by id."""
    row = conn.execute(
        select(dead_letters).where(dead_letters.c.id == dead_letter_id)
    ).one_or_none()
    return DeadLetter(**row._mapping) if row is not None else None
