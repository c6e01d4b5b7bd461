"""Which contact each event is about, found for a whole batch at once (docs/design.md §3).

By ``contact_id`` within the event's team; else by ``phone`` (read in the
team's region) against the team's contacts' ``phone`` or ``phone_secondary``:
several matches are ambiguous, none means a contact to create (not for an
outbound call: that is not found). Found rows
are locked (``FOR NO KEY UPDATE``) until the transaction ends, in id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, bindparam, or_, select, text, tuple_

from contact_sync.accounts.teams import Team
from contact_sync.calls.events import CallCompleted, InvalidEvent
from contact_sync.calls.inbox import EventKey, key_of
from contact_sync.contacts.phones import normalise_phone
from contact_sync.db.tables import contacts
from contact_sync.errors import AmbiguousContact, ContactNotFound


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


# Built once, as the batch's statements are (db/bulk.rows_source); found rows locked in id order.
_BY_ID = (
    select(contacts)
    .where(tuple_(contacts.c.team_id, contacts.c.id).in_(bindparam("pairs", expanding=True)))
    .order_by(contacts.c.id)
    .with_for_update(key_share=True)
)
_BY_PHONE = (
    select(contacts)
    .where(
        or_(
            tuple_(contacts.c.team_id, contacts.c.phone).in_(bindparam("numbers", expanding=True)),
            tuple_(contacts.c.team_id, contacts.c.phone_secondary).in_(
                bindparam("secondary", expanding=True)
            ),
        )
    )
    .order_by(contacts.c.id)
    .with_for_update(key_share=True)
)


def _by_id(conn: Connection, events: list[CallCompleted]) -> dict[EventKey, Resolution]:
    """Events naming their contact: the row, looked up (and locked) within the event's team.

    Another team's row is never touched, nor reported as found.
    """
    pairs = sorted({(e.team_id, e.contact_id) for e in events if e.contact_id is not None})
    rows: dict[str, Row[Any]] = {}
    if pairs:
        for row in conn.execute(_BY_ID, {"pairs": pairs}):
            rows[row.id] = row
    found: dict[EventKey, Resolution] = {}
    for event in events:
        hit = rows.get(event.contact_id or "")
        found[key_of(event)] = (
            hit
            if hit is not None and hit.team_id == event.team_id
            else ContactNotFound(f"no contact {event.contact_id} in this team")
        )
    return found


def _numbers(
    events: list[CallCompleted], teams: dict[str, Team]
) -> tuple[list[tuple[CallCompleted, str]], dict[EventKey, Resolution]]:
    """Each event's phone read in its team's region; an unreadable one makes the event invalid."""
    readable: list[tuple[CallCompleted, str]] = []
    invalid: dict[EventKey, Resolution] = {}
    for event in events:
        assert event.phone is not None  # parse_event requires a contact id or a phone
        try:
            readable.append(
                (event, normalise_phone(event.phone, teams[event.team_id].default_region))
            )
        except ValueError as exc:
            invalid[key_of(event)] = InvalidEvent("invalid_payload", f"phone: {exc}")
    return readable, invalid


def _by_phone(
    conn: Connection, events: list[tuple[CallCompleted, str]]
) -> dict[EventKey, Resolution]:
    """Events naming a number: the one contact of the team with it, several, or none."""
    if not events:
        return {}
    numbers = sorted({(e.team_id, phone) for e, phone in events})
    _lock_numbers(conn, [f"{team}:{phone}" for team, phone in numbers])
    matches: dict[tuple[str, str], dict[str, Row[Any]]] = {pair: {} for pair in numbers}
    for row in conn.execute(_BY_PHONE, {"numbers": numbers, "secondary": numbers}):
        for number in (row.phone, row.phone_secondary):
            if (row.team_id, number) in matches:
                matches[(row.team_id, number)][row.id] = row
    found: dict[EventKey, Resolution] = {}
    created: set[NewContact] = set()
    for event, phone in events:  # in delivery order: a number is created by its first creator
        hits = matches[(event.team_id, phone)]
        if len(hits) > 1:
            found[key_of(event)] = AmbiguousContact(f"several contacts of this team have {phone}")
        elif hits:
            found[key_of(event)] = next(iter(hits.values()))
        else:
            found[key_of(event)] = _unknown_number(event, NewContact(event.team_id, phone), created)
    return found


def _unknown_number(
    event: CallCompleted, number: NewContact, created: set[NewContact]
) -> NewContact | ContactNotFound:
    """An event from a number no contact has (docs/design.md §11).

    Inbound (or of no direction, as in round 1): the contact to create. Outbound:
    the dialer called someone the CRM does not know, which ops should see, unless
    an event delivered before it in this batch creates that contact (as it would
    have, delivered alone).
    """
    if event.direction == "outbound" and number not in created:
        return ContactNotFound(f"an outbound call to {number.phone}, which no contact has")
    created.add(number)
    return number


def resolve(
    conn: Connection, events: Sequence[CallCompleted], teams: dict[str, Team]
) -> dict[EventKey, Resolution]:
    """A resolution for every event, by ``(team_id, event_id)`` (events must have distinct keys).

    Two teams may send the same event id: each is its own team's event.
    """
    named = [e for e in events if e.contact_id is not None]
    by_number, invalid = _numbers([e for e in events if e.contact_id is None], teams)
    # The number locks before any row lock, as every writer takes them (an upsert,
    # contacts/duplicates.py): a batch holding a row while it waits for a number
    # an upsert holds, the upsert waiting for that row, would deadlock.
    _lock_numbers(conn, [f"{event.team_id}:{phone}" for event, phone in by_number])
    return {**invalid, **_by_id(conn, named), **_by_phone(conn, by_number)}
