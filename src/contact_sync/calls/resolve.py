"""Which contact each event is about, found for a whole batch at once (docs/design.md §3).

By ``contact_id`` within the event's team; else by ``phone`` (read in the
team's region) against the team's contacts' ``phone`` or ``phone_secondary``:
several matches are ambiguous, none means a contact to create (not for an
outbound call: that is not found). Found rows
are locked (``FOR NO KEY UPDATE``) until the transaction ends, in id order.

With ``skip_busy`` (PostgreSQL; the worker's first pass, docs/design.md §5) nothing
waits: an event whose contact row or number another transaction holds resolves
to ``Busy``, and the caller applies it after its own commit. Without that, two
workers' batches over the same contacts took turns: each waited for the other's
whole transaction (bench/worker_throughput.py, batch mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, or_, select, text, tuple_, union

from contact_sync.accounts.teams import Team
from contact_sync.calls.events import CallCompleted, InvalidEvent
from contact_sync.calls.inbox import EventKey, key_of
from contact_sync.contacts.phones import normalise_phone
from contact_sync.db.bulk import given_rows, is_postgresql, rows_source
from contact_sync.db.tables import contacts
from contact_sync.errors import AmbiguousContact, ContactNotFound


@dataclass(frozen=True)
class NewContact:
    """No contact of the team has this number: the events create one."""

    team_id: str
    phone: str


@dataclass(frozen=True)
class Busy:
    """Another transaction holds the event's contact or number (``skip_busy`` only)."""


BUSY = Busy()

Resolution = Row[Any] | NewContact | InvalidEvent | ContactNotFound | AmbiguousContact | Busy


def _lock_numbers(conn: Connection, keys: list[str], *, wait: bool = True) -> set[str]:
    """Hold each number's lock; the keys another transaction holds when not ``wait``.

    Serialises resolution of one number within a team, so two workers seeing the
    same unknown number create one contact, not two. Sorted: one order. A try
    takes what is free and waits for nothing.
    """
    if not keys or conn.dialect.name != "postgresql":
        return set()
    wanted = sorted(set(keys))
    if wait:
        conn.execute(_LOCK_NUMBERS, {"keys": wanted})
        return set()
    return set(conn.execute(_TRY_NUMBERS, {"keys": wanted}).scalars())


_LOCK_NUMBERS = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
    "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"
)
_TRY_NUMBERS = text(
    "SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
    "WHERE NOT pg_try_advisory_xact_lock(hashtextextended(k, 0))"
)


# SQLite's lookup by id (PostgreSQL's: ``_by_pairs``); found rows locked in id order.
_BY_ID = (
    select(contacts)
    .where(tuple_(contacts.c.team_id, contacts.c.id).in_(bindparam("pairs", expanding=True)))
    .order_by(contacts.c.id)
    .with_for_update(key_share=True)
)
_HOLDS_NUMBER = or_(
    tuple_(contacts.c.team_id, contacts.c.phone).in_(bindparam("numbers", expanding=True)),
    tuple_(contacts.c.team_id, contacts.c.phone_secondary).in_(
        bindparam("secondary", expanding=True)
    ),
)
# SQLite's lookup by number (PostgreSQL's: ``_by_numbers``).
_BY_PHONE = (
    select(contacts).where(_HOLDS_NUMBER).order_by(contacts.c.id).with_for_update(key_share=True)
)
# What the first pass reads of the holders of numbers, unlocked, before it locks them by id.
_HOLDER_COLUMNS = (contacts.c.id, contacts.c.team_id, contacts.c.phone, contacts.c.phone_secondary)


_PAIR = ("team_id", "id")


@lru_cache(maxsize=4)
def _by_pairs(*, locked: bool, skip_locked: bool = False) -> Select[Any]:
    """PostgreSQL's lookup by id: the pairs as given rows joined to the primary key
    (db/bulk.py, ``rows_source``), the rows locked in id order, with ``skip_locked``
    those another transaction holds left out (the first pass); not ``locked``, the ids
    of those that exist (which of the left out are busy, not absent).

    A row-value ``IN`` list is a statement as long as the batch (800 parameters
    for 400 contacts), new to psycopg and to PostgreSQL's plan cache at every
    batch size, and converted by psycopg again each time (it caches short
    statements only): a fifth of the apply's lookup phase.
    """
    given = rows_source(contacts, _PAIR).subquery()
    joined = contacts.join(
        given, (contacts.c.team_id == given.c.team_id) & (contacts.c.id == given.c.id)
    )
    if not locked:
        return select(contacts.c.id).select_from(joined)
    return (
        select(contacts)
        .select_from(joined)
        .order_by(contacts.c.id)
        .with_for_update(key_share=True, skip_locked=skip_locked, of=contacts)
    )


def _pairs_parameter(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return given_rows([{"team_id": team_id, "id": contact_id} for team_id, contact_id in pairs])


def _rows_by_id(
    conn: Connection, pairs: list[tuple[str, str]], skip_busy: bool
) -> dict[str, Row[Any]]:
    """The rows of ``(team_id, id)`` pairs, locked; with ``skip_busy`` those another
    transaction holds are skipped, not waited for."""
    if not pairs:
        return {}
    if is_postgresql(conn):
        statement = _by_pairs(locked=True, skip_locked=skip_busy)
        rows = conn.execute(statement, _pairs_parameter(pairs))
    else:  # one writer at a time: nothing to skip
        rows = conn.execute(_BY_ID, {"pairs": pairs})
    return {row.id: row for row in rows}


def _existing(conn: Connection, pairs: list[tuple[str, str]]) -> set[str]:
    """The ids of the pairs' rows that exist, unlocked (PostgreSQL: a skip left them out)."""
    return set(conn.execute(_by_pairs(locked=False), _pairs_parameter(pairs)).scalars())


def _by_id(
    conn: Connection, events: list[CallCompleted], skip_busy: bool = False
) -> dict[EventKey, Resolution]:
    """Events naming their contact: the row, looked up (and locked) within the event's team.

    Another team's row is never touched, nor reported as found.
    """
    pairs = sorted({(e.team_id, e.contact_id) for e in events if e.contact_id is not None})
    rows = _rows_by_id(conn, pairs, skip_busy)
    missing = [pair for pair in pairs if pair[1] not in rows]
    busy: set[str] = set()
    if skip_busy and missing:  # skipped, or absent: the rows that exist were skipped
        busy = _existing(conn, missing)
    found: dict[EventKey, Resolution] = {}
    for event in events:
        hit = rows.get(event.contact_id or "")
        if event.contact_id in busy:
            found[key_of(event)] = BUSY
        elif hit is not None and hit.team_id == event.team_id:
            found[key_of(event)] = hit
        else:
            found[key_of(event)] = ContactNotFound(f"no contact {event.contact_id} in this team")
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
    conn: Connection, events: list[tuple[CallCompleted, str]], skip_busy: bool = False
) -> dict[EventKey, Resolution]:
    """Events naming a number: the one contact of the team with it, several, or none."""
    if not events:
        return {}
    numbers = sorted({(e.team_id, phone) for e, phone in events})
    keys = {pair: f"{pair[0]}:{pair[1]}" for pair in numbers}
    busy_keys = _lock_numbers(conn, list(keys.values()), wait=not skip_busy)
    busy = {pair for pair in numbers if keys[pair] in busy_keys}
    free = [pair for pair in numbers if pair not in busy]
    if skip_busy:
        matches, held = _free_holders(conn, free)
        busy |= held
    else:
        matches = _holders(_read_holders(conn, free, locked=True), free)
    found: dict[EventKey, Resolution] = {}
    created: set[NewContact] = set()
    for event, phone in events:  # in delivery order: a number is created by its first creator
        pair = (event.team_id, phone)
        hits = matches.get(pair, {})
        if pair in busy:
            found[key_of(event)] = BUSY
        elif len(hits) > 1:
            found[key_of(event)] = AmbiguousContact(f"several contacts of this team have {phone}")
        elif hits:
            found[key_of(event)] = next(iter(hits.values()))
        else:
            found[key_of(event)] = _unknown_number(event, NewContact(event.team_id, phone), created)
    return found


@lru_cache(maxsize=2)
def _by_numbers(*, locked: bool) -> Select[Any]:
    """PostgreSQL's ``_BY_PHONE`` (not ``locked``: ``_HOLDER_COLUMNS`` only): the
    ``(team_id, phone)`` pairs as given rows, joined to each number column's index, as
    ``_by_pairs`` joins ids."""
    given = rows_source(contacts, ("team_id", "phone")).subquery()
    holding = [
        select(contacts.c.id).join(
            given, (contacts.c.team_id == given.c.team_id) & (column == given.c.phone)
        )
        for column in (contacts.c.phone, contacts.c.phone_secondary)
    ]
    ids = union(*holding)
    if not locked:
        return select(*_HOLDER_COLUMNS).where(contacts.c.id.in_(ids))
    return (
        select(contacts)
        .where(contacts.c.id.in_(ids))
        .order_by(contacts.c.id)
        .with_for_update(key_share=True, of=contacts)
    )


def _read_holders(conn: Connection, numbers: list[tuple[str, str]], *, locked: bool) -> Any:
    """The rows holding ``(team_id, number)`` pairs as primary or secondary phone."""
    if is_postgresql(conn):
        rows = given_rows([{"team_id": team_id, "phone": phone} for team_id, phone in numbers])
        return conn.execute(_by_numbers(locked=locked), rows)
    # SQLite: one writer at a time, so only the second pass's locked read is asked.
    return conn.execute(_BY_PHONE, {"numbers": numbers, "secondary": numbers})


def _holders(rows: Any, numbers: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each ``(team_id, number)``'s rows among ``rows``, by id."""
    matches: dict[tuple[str, str], dict[str, Any]] = {pair: {} for pair in numbers}
    for row in rows:
        for number in (row.phone, row.phone_secondary):
            if (row.team_id, number) in matches:
                matches[(row.team_id, number)][row.id] = row
    return matches


def _free_holders(
    conn: Connection, numbers: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], dict[str, Any]], set[tuple[str, str]]]:
    """The first pass's ``_BY_PHONE``: the numbers' holders, locked unless another
    transaction holds one (that number is then busy).

    The holders are read unlocked, then locked by id with ``SKIP LOCKED``: a
    skipped row would otherwise look like no holder, and the event would create
    a second contact with the number. A row locked here is judged by what it
    holds now.
    """
    if not numbers:
        return {}, set()
    unlocked = _holders(_read_holders(conn, numbers, locked=False), numbers)
    pairs = sorted({(row.team_id, row.id) for hits in unlocked.values() for row in hits.values()})
    rows = _rows_by_id(conn, pairs, skip_busy=True)
    busy = {pair for pair, hits in unlocked.items() if any(i not in rows for i in hits)}
    return _holders(rows.values(), numbers), busy


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
    conn: Connection,
    events: Sequence[CallCompleted],
    teams: dict[str, Team],
    *,
    skip_busy: bool = False,
) -> dict[EventKey, Resolution]:
    """A resolution for every event, by ``(team_id, event_id)`` (events must have distinct keys).

    Two teams may send the same event id: each is its own team's event. With
    ``skip_busy`` (PostgreSQL) an event whose contact or number another
    transaction holds is ``BUSY`` and nothing is waited for.
    """
    skip_busy = skip_busy and conn.dialect.name == "postgresql"
    named = [e for e in events if e.contact_id is not None]
    by_number, invalid = _numbers([e for e in events if e.contact_id is None], teams)
    if not skip_busy:
        # The number locks before any row lock, as every writer takes them (an upsert,
        # contacts/duplicates.py): a batch holding a row while it waits for a number
        # an upsert holds, the upsert waiting for that row, would deadlock. (A try
        # waits for nothing: no order is needed.)
        _lock_numbers(conn, [f"{event.team_id}:{phone}" for event, phone in by_number])
    return {**invalid, **_by_id(conn, named, skip_busy), **_by_phone(conn, by_number, skip_busy)}
