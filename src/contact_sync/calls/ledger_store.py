"""The calls ledger's SQL (docs/design.md §11); its rules are in ``calls/ledger.py``.

The event apply writes a batch's calls with a fixed number of statements: one
read of the stored rows of the batch's calls and one upsert of the rows that are
newer. It is told which contacts that touched; it then reads their call fields
back from the ledger and writes them with the contacts' next versions
(``contacts.writer.call_fields``). Nothing here begins or commits: it runs in the
caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contact_sync.calls.ledger import CallKey, CallRecord, is_newer, newest_per_call
from contact_sync.contacts.writer import code_point_order
from contact_sync.db.bulk import is_postgresql, rows_parameter, rows_source
from contact_sync.db.tables import calls
from contact_sync.ids import new_id

_COLUMNS = tuple(c.name for c in calls.c)
# Replaced by a newer event of the call; the row keeps its id, team and call id.
_REPLACED = tuple(
    c.name for c in calls.c if c.name not in ("id", "team_id", "call_id", "recorded_at")
)


def _stored(conn: Connection, keys: Sequence[CallKey]) -> dict[CallKey, Any]:
    """The stored rows of these calls (their contact and order), by key."""
    wanted = set(keys)
    if is_postgresql(conn):
        pairs = [{"team_id": team, "call_id": call} for team, call in sorted(wanted)]
        rows = conn.execute(_stored_by_pairs(), rows_parameter(_PAIR, pairs))
        return {(row.team_id, row.call_id): row for row in rows}
    params = {"teams": sorted({t for t, _ in wanted}), "calls": sorted({c for _, c in wanted})}
    found = conn.execute(_STORED, params)
    return {key: row for row in found if (key := (row.team_id, row.call_id)) in wanted}


_PAIR = ("team_id", "call_id")
_STORED_COLUMNS = (
    calls.c.team_id,
    calls.c.call_id,
    calls.c.contact_id,
    calls.c.ended_at,
    calls.c.event_id,
)
# SQLite's read: two plain IN lists, not a row-value IN (which PostgreSQL planned as an
# OR of comparisons: a 500-event batch read took 40 ms). Built once, as the batch's
# statements are (db/bulk.rows_source).
_STORED = select(*_STORED_COLUMNS).where(
    calls.c.team_id.in_(bindparam("teams", expanding=True)),
    calls.c.call_id.in_(bindparam("calls", expanding=True)),
)


@lru_cache(maxsize=1)
def _stored_by_pairs() -> Any:
    """PostgreSQL's read: the batch's (team, call) pairs as given rows, one probe each of
    the unique key. The two IN lists were planned on the team's calls index there, reading
    every call of the batch's teams (1.8 ms for a group of 30 events, 0.26 ms now;
    ``bench/profile_apply.py --batch 30 --statements``)."""
    given = rows_source(calls, _PAIR).subquery()
    return select(*_STORED_COLUMNS).join(
        given, and_(calls.c.team_id == given.c.team_id, calls.c.call_id == given.c.call_id)
    )


def _order(row: Any | None) -> tuple[datetime, str] | None:
    return None if row is None else (row.ended_at, row.event_id)


def _rows(records: Sequence[CallRecord], now: datetime) -> list[dict[str, Any]]:
    rows = [{**r.values(), "id": new_id(), "recorded_at": now} for r in records]
    rows.sort(key=lambda row: (row["team_id"], row["call_id"]))  # one lock order for every worker
    return rows


def _upsert(conn: Connection, records: Sequence[CallRecord], now: datetime) -> None:
    """Insert the rows, or replace stored ones that are older (§4.1), in one statement.

    The condition is checked again in SQL: a concurrent writer of the same call
    may have stored a newer row since ``_stored`` read it.
    """
    if is_postgresql(conn):  # the rows as JSON (db/bulk.py), as the inbox claim
        params = {**rows_parameter(_COLUMNS, _rows(records, now)), "b_now": now}
        conn.execute(_upsert_statement(conn.dialect.name), params)
    else:  # SQLite: the rows as multi-row statements ("insertmanyvalues")
        rows = [{**row, "b_now": now} for row in _rows(records, now)]
        conn.execute(_upsert_statement(conn.dialect.name).returning(calls.c.id), rows)


@lru_cache(maxsize=2)
def _upsert_statement(dialect: str) -> Any:
    """The ledger's upsert on ``dialect``, built once (db/bulk.py, ``rows_source``)."""
    postgresql = dialect == "postgresql"
    stmt = (pg_insert if postgresql else sqlite_insert)(calls)
    if postgresql:
        stmt = stmt.from_select(_COLUMNS, rows_source(calls, _COLUMNS))
    newer = or_(
        stmt.excluded.ended_at > calls.c.ended_at,
        and_(
            stmt.excluded.ended_at == calls.c.ended_at,
            code_point_order(dialect, stmt.excluded.event_id)
            > code_point_order(dialect, calls.c.event_id),
        ),
    )
    now = bindparam("b_now", type_=calls.c.recorded_at.type)
    return stmt.on_conflict_do_update(
        index_elements=[calls.c.team_id, calls.c.call_id],
        set_={**{name: stmt.excluded[name] for name in _REPLACED}, "recorded_at": now},
        where=newer,
    )


def write_calls(conn: Connection, records: Sequence[CallRecord], now: datetime) -> set[str]:
    """Record applied events' calls; a call's older event leaves its row as it was.

    Returns the contacts whose call fields may have changed: those of the rows
    written and those the replaced rows belonged to (a re-analysis may name
    another contact). The caller recomputes their fields.
    """
    newest = newest_per_call(records)
    if not newest:
        return set()
    stored = _stored(conn, [r.key for r in newest])
    written = [r for r in newest if is_newer(r, _order(stored.get(r.key)))]
    if not written:
        return set()
    _upsert(conn, written, now)
    return {r.contact_id for r in written} | {
        stored[r.key].contact_id for r in written if r.key in stored
    }


def list_calls(
    conn: Connection, *, team_id: str, contact_id: str, limit: int, offset: int
) -> list[dict[str, Any]]:
    """A page of the contact's calls, newest ``ended_at`` first (ties: the larger id)."""
    rows = conn.execute(
        select(calls)
        .where(calls.c.contact_id == contact_id, calls.c.team_id == team_id)
        .order_by(calls.c.ended_at.desc(), calls.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [{k: v for k, v in row._mapping.items() if k != "team_id"} for row in rows]


def count_calls(conn: Connection, *, team_id: str, contact_id: str) -> int:
    """How many calls the contact has."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(calls)
            .where(calls.c.contact_id == contact_id, calls.c.team_id == team_id)
        ).scalar_one()
    )
