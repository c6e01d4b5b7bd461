"""The suppression list: numbers of deleted do-not-call contacts, as keyed hashes only.

Deleting a contact erases it, but its "do not call me" must outlive it: a
later inbound call from one of its numbers creates a contact that is
do-not-call from the start, and so does a person creating one with it
(README, "Erasure"). The list holds no personal data: for each number,
``HMAC-SHA256(team secret, E.164)`` and the time.

Why keyed, and not SHA-256 of team id and number: there are few phone
numbers (about 10^10 in a country's plan), so a plain hash of a known
team id and a number is reversed by hashing them all, in minutes. With a
random 256-bit secret per team, the table alone (a backup, an export, a
log of it) names no number, and the same number hashes differently in
every team, so entries cannot be matched across teams. The secret is in
the team's row: whoever holds the whole database can still test numbers,
which is the price of answering "is this number suppressed" from the
database alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contact_sync.db.tables import suppressions, teams

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
SUPPRESSED = "number_suppressed"
"""Why a new contact is do-not-call from the start: the ``reason`` of that history change."""


def phone_hash(secret: str, phone: str) -> str:
    """The stored form of ``phone`` (E.164) under a team's secret."""
    return hmac.new(bytes.fromhex(secret), phone.encode(), hashlib.sha256).hexdigest()


def _secrets(conn: Connection, team_ids: Iterable[str]) -> dict[str, str]:
    """The secrets of those teams that have one (a team without one has suppressed nothing)."""
    wanted = sorted(set(team_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(teams.c.id, teams.c.suppression_key).where(
            teams.c.id.in_(wanted), teams.c.suppression_key.is_not(None)
        )
    )
    return {row.id: row.suppression_key for row in rows}


def _secret_for_writing(conn: Connection, team_id: str) -> str:
    """The team's secret, made on first use.

    Set only where still empty, so two first writers agree on one secret
    (the second one's update finds it set and reads it).
    """
    conn.execute(
        update(teams)
        .where(teams.c.id == team_id, teams.c.suppression_key.is_(None))
        .values(suppression_key=secrets.token_hex(32))
    )
    return str(
        conn.execute(select(teams.c.suppression_key).where(teams.c.id == team_id)).scalar_one()
    )


def _check(phone: str) -> str:
    if not _E164.match(phone):
        raise ValueError("suppression compares numbers in E.164 form only")
    return phone


def suppress(conn: Connection, *, team_id: str, phones: Iterable[str], now: datetime) -> int:
    """Add the team's numbers (E.164) to its list; returns how many numbers were given."""
    numbers = sorted({_check(phone) for phone in phones})
    if not numbers:
        return 0
    secret = _secret_for_writing(conn, team_id)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        insert(suppressions).on_conflict_do_nothing(),
        [
            {"team_id": team_id, "phone_hash": phone_hash(secret, phone), "created_at": now}
            for phone in numbers
        ],
    )
    return len(numbers)


def suppressed_numbers(
    conn: Connection, numbers: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which ``(team_id, phone)`` pairs (E.164) are suppressed: two statements for any number."""
    pairs = {(team, _check(phone)) for team, phone in numbers}
    team_secrets = _secrets(conn, (team for team, _ in pairs))
    hashed = {
        (team, phone_hash(team_secrets[team], phone)): (team, phone)
        for team, phone in pairs
        if team in team_secrets
    }
    if not hashed:
        return set()
    rows = conn.execute(
        select(suppressions.c.team_id, suppressions.c.phone_hash).where(
            tuple_(suppressions.c.team_id, suppressions.c.phone_hash).in_(sorted(hashed))
        )
    )
    return {hashed[(row.team_id, row.phone_hash)] for row in rows}


def is_suppressed(conn: Connection, team_id: str, phone: str) -> bool:
    """Whether the team's suppression list holds ``phone`` (E.164, as normalised on input).

    What every path that gives a new contact a number asks (API create, the
    event path's new contacts, and upsert and import when they come): if
    true, the contact is do-not-call from the start.
    """
    return bool(suppressed_numbers(conn, [(team_id, phone)]))
