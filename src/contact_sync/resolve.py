"""Which contact each event is about, found for a whole batch at once (DESIGN §3).

By ``contact_id`` within the event's team; else by ``phone`` (read in the
team's region) against the team's contacts' ``phone`` or ``phone_secondary``:
several matches are ambiguous, none means a contact to create. Found rows
are locked (``FOR NO KEY UPDATE``) until the transaction ends, in id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, or_, select, text, tuple_

from contact_sync.db.tables import contacts
from contact_sync.errors import AmbiguousContact, ContactNotFound
from contact_sync.events import CallCompleted, InvalidEvent
from contact_sync.inbox import EventKey, key_of
from contact_sync.phones import normalise_phone
from contact_sync.teams import Team


@dataclass(frozen=True)
class NewContact:
    """No contact of the team has this number: the events create one."""

    team_id: str
    phone: str


Resolution = Row[Any] | NewContact | InvalidEvent | ContactNotFound | AmbiguousContact


def _lock_numbers(conn: Connection, keys: list[str]) -> None:
    # Serialise resolution of one number within a team, so two workers seeing
    # the same unknown number create one contact, not two. Sorted: one order.
    if keys and conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"
            ),
            {"keys": sorted(set(keys))},
        )


def resolve(
    conn: Connection, events: Sequence[CallCompleted], teams: dict[str, Team]
) -> dict[EventKey, Resolution]:
    """A resolution for every event, by ``(team_id, event_id)`` (events must have distinct keys).

    Two teams may send the same event id: each is its own team's event.
    """
    found: dict[EventKey, Resolution] = {}
    by_id = [e for e in events if e.contact_id is not None]
    by_phone: list[tuple[CallCompleted, str]] = []
    for event in events:
        if event.contact_id is not None:
            continue
        assert event.phone is not None  # parse_event requires one of the two
        try:
            by_phone.append(
                (event, normalise_phone(event.phone, teams[event.team_id].default_region))
            )
        except ValueError as exc:
            found[key_of(event)] = InvalidEvent("invalid_payload", f"phone: {exc}")

    rows: dict[str, Row[Any]] = {}
    if by_id:
        # Looked up (and locked) within the event's team: another team's row is never touched.
        pairs = sorted({(e.team_id, e.contact_id) for e in by_id if e.contact_id is not None})
        for row in conn.execute(
            select(contacts)
            .where(tuple_(contacts.c.team_id, contacts.c.id).in_(pairs))
            .order_by(contacts.c.id)
            .with_for_update(key_share=True)
        ):
            rows[row.id] = row
    for event in by_id:
        hit = rows.get(event.contact_id or "")
        found[key_of(event)] = (
            hit
            if hit is not None and hit.team_id == event.team_id
            else ContactNotFound(f"no contact {event.contact_id} in this team")
        )

    if by_phone:
        numbers = sorted({(e.team_id, phone) for e, phone in by_phone})
        _lock_numbers(conn, [f"{team}:{phone}" for team, phone in numbers])
        matches: dict[tuple[str, str], dict[str, Row[Any]]] = {pair: {} for pair in numbers}
        for row in conn.execute(
            select(contacts)
            .where(
                or_(
                    tuple_(contacts.c.team_id, contacts.c.phone).in_(numbers),
                    tuple_(contacts.c.team_id, contacts.c.phone_secondary).in_(numbers),
                )
            )
            .order_by(contacts.c.id)
            .with_for_update(key_share=True)
        ):
            for number in (row.phone, row.phone_secondary):
                if (row.team_id, number) in matches:
                    matches[(row.team_id, number)][row.id] = row
        for event, phone in by_phone:
            hits = matches[(event.team_id, phone)]
            if len(hits) > 1:
                found[key_of(event)] = AmbiguousContact(
                    f"several contacts of this team have {phone}"
                )
            elif hits:
                found[key_of(event)] = next(iter(hits.values()))
            else:
                found[key_of(event)] = NewContact(event.team_id, phone)
    return found
