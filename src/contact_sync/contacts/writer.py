"""The one writer of contact rows and their history: people's writes and the event apply alike.

Every change of a stored contact is a versioned compare-and-set,
``UPDATE ... WHERE id AND version = <the version read>``, that sets the next
version: a write made from a stale read changes nothing and is noticed. The
team is not in that condition: the callers read and lock the row within its
team first, and adding ``team_id`` made PostgreSQL's prepared plan of the
batch update twice as slow (measured with the worker benchmark).

New contacts and history records are inserted here too, and the
observations, changes and skips become their stored JSON here (through
``contact_sync.contacts.records``). Writes come as lists so that the event apply
stays set-based: one statement for a batch's new contacts, one for its
updates, one for its history records, whatever the batch's size. Nothing
here begins, commits or rolls back: it all happens in the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Row,
    Select,
    String,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    true,
    tuple_,
    update,
)

from contact_sync.contacts import field_values
from contact_sync.contacts.records import (
    Change,
    Observation,
    Skip,
    change_json,
    provenance_json,
    skip_json,
)
from contact_sync.db.bulk import (
    given_rows,
    insert_rows,
    is_postgresql,
    rows_parameter,
    rows_source,
)
from contact_sync.db.tables import calls, contact_history, contacts
from contact_sync.errors import StaleVersion
from contact_sync.ids import new_id
from contact_sync.scheduling.numbers import phone_facts


@dataclass(frozen=True)
class ContactInsert:
    """A new contact: every column but ``provenance``, and the observation of each value."""

    values: Mapping[str, Any]
    provenance: Mapping[str, Observation]


@dataclass(frozen=True)
class ContactUpdate:
    """A stored contact's next version: the columns that change and all its observations."""

    contact_id: str
    read_version: int
    version: int
    values: Mapping[str, Any]
    provenance: Mapping[str, Observation]
    updated_at: datetime
    # For the side table of custom-field values (contacts/field_values): the contact's team
    # (read from the row when not given) and its custom_fields before this write (only
    # the keys that changed are rewritten; all of them when not given).
    team_id: str | None = None
    custom_fields_before: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class HistoryRecord:
    """One write's record in a contact's history (the delete's keeps counts only)."""

    contact_id: str
    team_id: str
    version_before: int | None
    version_after: int
    source: str
    occurred_at: datetime
    recorded_at: datetime
    changes: Sequence[Change] = ()
    skipped: Sequence[Skip] = ()
    event_id: str | None = None
    call_id: str | None = None
    api_key_id: str | None = None
    summary: str | None = None


def _with_number_facts(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """``values`` and, when they set the primary number, what it says (zone and state)."""
    if "phone" not in values:
        return values
    zone, state = phone_facts(values["phone"])
    return {**values, "phone_zone": zone, "phone_state": state}


def insert_contacts(conn: Connection, new: Sequence[ContactInsert]) -> None:
    """Insert new contacts in one statement."""
    if new:
        rows = [
            {**_with_number_facts(c.values), "provenance": provenance_json(c.provenance)}
            for c in new
        ]
        insert_rows(conn, contacts, rows)
        field_values.insert_values(
            conn,
            [
                row
                for c in new
                for row in field_values.value_rows(
                    c.values["team_id"], c.values["id"], c.values.get("custom_fields") or {}
                )
            ],
        )


def _compare_and_set(columns: Sequence[str]) -> Update:
    """The versioned update of ``columns``, ``provenance``, ``version`` and ``updated_at``."""
    return (
        update(contacts)
        .where(
            contacts.c.id == bindparam("b_id"),
            contacts.c.version == bindparam("b_read"),
        )
        .values(
            {
                **{name: bindparam(f"b_{name}") for name in columns},
                "provenance": bindparam("b_provenance"),
                "version": bindparam("b_version"),
                "updated_at": bindparam("b_updated_at"),
            }
        )
    )


_KEYS = (("b_id", contacts.c.id.type), ("b_read", contacts.c.version.type))


def _params(change: ContactUpdate) -> dict[str, Any]:
    return {
        **{f"b_{name}": value for name, value in _with_number_facts(change.values).items()},
        "b_provenance": provenance_json(change.provenance),
        "b_id": change.contact_id,
        "b_read": change.read_version,
        "b_version": change.version,
        "b_updated_at": change.updated_at,
    }


def update_contact(conn: Connection, change: ContactUpdate) -> Row[Any]:
    """Write one contact's next version; the stored row, or ``StaleVersion`` if it moved on."""
    stmt = _compare_and_set(tuple(_with_number_facts(change.values))).returning(*contacts.c)
    row = conn.execute(stmt, _params(change)).one_or_none()
    if row is None:
        raise StaleVersion(change.read_version)
    _side_values(conn, [change])
    return row


def _side_values(conn: Connection, changes: Sequence[ContactUpdate]) -> None:
    """Keep the side table of custom-field values in step with the written ``custom_fields``."""
    field_values.replace_values(
        conn,
        [
            (c.team_id, c.contact_id, c.custom_fields_before, c.values["custom_fields"])
            for c in changes
            if "custom_fields" in c.values
        ],
    )


def update_contacts(conn: Connection, changes: Sequence[ContactUpdate]) -> None:
    """Write several contacts' next versions, one statement per set of changed columns.

    The callers hold the rows' locks, so a lost compare-and-set would mean a
    lock did not hold: that is raised, never ignored.
    """
    postgresql = is_postgresql(conn)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change in changes:
        values = _with_number_facts(change.values)
        row = _given_row(change, values) if postgresql else _params(change)
        groups.setdefault(tuple(values), []).append(row)
    for columns, rows in groups.items():
        if postgresql:  # one statement, the rows as JSON (db/bulk.py)
            names = (*columns, "provenance", "version", "updated_at")
            written = conn.execute(_compare_and_set_rows(names), given_rows(rows)).rowcount
        else:
            written = conn.execute(_compare_and_set(columns), rows).rowcount
        if written not in (len(rows), -1):
            raise RuntimeError("a locked contact changed under its lock")
    _side_values(conn, changes)


def _given_row(change: ContactUpdate, values: Mapping[str, Any]) -> dict[str, Any]:
    """A row of ``_compare_and_set_rows``: its key, the columns, provenance, version and time,
    built once (not as ``_params`` and then renamed)."""
    row = {"b_id": change.contact_id, "b_read": change.read_version, **values}
    row["provenance"] = provenance_json(change.provenance)
    row["version"] = change.version
    row["updated_at"] = change.updated_at
    return row


@lru_cache(maxsize=64)
def _compare_and_set_rows(names: tuple[str, ...]) -> Update:
    """``_compare_and_set`` of many contacts at once, the rows given as one parameter
    (``_given_row``): built once per set of columns."""
    given = rows_source(contacts, ("b_id", "b_read", *names), _KEYS).subquery()
    return (
        update(contacts)
        .where(contacts.c.id == given.c.b_id, contacts.c.version == given.c.b_read)
        .values({name: given.c[name] for name in names})
    )


_HISTORY_COLUMNS = tuple(c.name for c in contact_history.c)


def _history_row(record: HistoryRecord) -> dict[str, Any]:
    return {
        "id": new_id(),
        "contact_id": record.contact_id,
        "team_id": record.team_id,
        "version_before": record.version_before,
        "version_after": record.version_after,
        "source": record.source,
        "event_id": record.event_id,
        "call_id": record.call_id,
        "api_key_id": record.api_key_id,
        "occurred_at": record.occurred_at,
        "recorded_at": record.recorded_at,
        "changes": [change_json(change) for change in record.changes],
        "skipped": [skip_json(skip) for skip in record.skipped],
        "summary": record.summary,
    }


@lru_cache(maxsize=1)
def _history_insert() -> Any:
    """PostgreSQL's insert of history records: built once (db/bulk.py, ``rows_source``)."""
    return insert(contact_history).from_select(
        _HISTORY_COLUMNS, rows_source(contact_history, _HISTORY_COLUMNS)
    )


def record_history(conn: Connection, records: Sequence[HistoryRecord]) -> None:
    """Insert history records in one statement."""
    if not records:
        return
    rows = [_history_row(record) for record in records]
    if is_postgresql(conn):  # one short statement, the rows as JSON (db/bulk.py)
        conn.execute(_history_insert(), given_rows(rows))  # _history_row: exactly the columns
    else:
        conn.execute(insert(contact_history), rows)


def delete_contact_rows(conn: Connection, *, team_id: str, contact_id: str) -> None:
    """Delete a contact, its history records and its custom-field values (the caller
    records the delete itself)."""
    field_values.delete_values(conn, contact_id)
    conn.execute(delete(contacts).where(contacts.c.id == contact_id, contacts.c.team_id == team_id))
    conn.execute(delete(contact_history).where(contact_history.c.contact_id == contact_id))


def by_code_point(conn: Connection, column: Any) -> Any:
    """``column`` compared as Python compares text (the merge's order, docs/design.md §4.1)."""
    return code_point_order(conn.dialect.name, column)


def code_point_order(dialect: str, column: Any) -> Any:
    """``by_code_point`` for a statement built once per dialect.

    PostgreSQL would use the database's collation (``en_US`` sorts ``a_b``
    after ``ab``); SQLite compares UTF-8 bytes, which is code-point order.
    """
    return column.collate("C") if dialect == "postgresql" else column


# The contact columns the calls ledger keeps (docs/design.md §11, §12), and what they
# hold for a contact without calls.
NO_CALLS: Mapping[str, Any] = {
    "call_count": 0,
    "attempt_count": 0,
    "last_called_at": None,
    "last_call_outcome": None,
}
CALL_FIELDS = tuple(NO_CALLS)


def call_fields(conn: Connection, contact_ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """What the ledger says of each contact's calls, read in one statement: the call fields.

    ``call_count``, ``last_called_at`` and ``last_call_outcome`` are read-only
    and not versioned (docs/design.md §11), and so is the internal
    ``attempt_count`` (outbound rows: the eligible stream's caps, §12). They are
    recomputed from the ledger rows, so that they are what it says whatever the
    delivery order. The caller writes them: with the contact's next version
    when it has one (one new row version, not two: the event apply), else by
    ``write_call_fields``.
    """
    ids = sorted(contact_ids)
    found = {contact_id: dict(NO_CALLS) for contact_id in ids}
    if not ids:
        return found
    for row in conn.execute(_call_fields_read(conn.dialect.name), {"ids": ids}):
        found[row.contact_id] = {name: getattr(row, name) for name in CALL_FIELDS}
    return found


@lru_cache(maxsize=2)
def _call_fields_read(dialect: str) -> Select[Any]:
    """The statement of ``call_fields`` on ``dialect``, built once (parameter ``ids``)."""
    if dialect == "postgresql":  # one index probe a contact, one statement text for any count
        given = bindparam("ids", type_=ARRAY(String))
        touched = func.unnest(given).table_valued("id").render_derived(name="touched")
        contact_id: Any = touched.c.id
        source: Any = touched.join(calls, calls.c.contact_id == touched.c.id)
        wanted: Any = true()
    else:
        contact_id, source = calls.c.contact_id, calls
        wanted = calls.c.contact_id.in_(bindparam("ids", expanding=True))
    latest = calls.alias("latest")
    last_outcome = (
        select(latest.c.outcome)
        .where(latest.c.contact_id == contact_id)
        .order_by(latest.c.ended_at.desc(), code_point_order(dialect, latest.c.event_id).desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            contact_id.label("contact_id"),
            func.count().label("call_count"),
            func.count().filter(calls.c.direction == "outbound").label("attempt_count"),
            func.max(calls.c.ended_at).label("last_called_at"),
            last_outcome.label("last_call_outcome"),
        )
        .select_from(source)
        .where(wanted)
        .group_by(contact_id)
    )


def write_call_fields(conn: Connection, fields: Mapping[str, Mapping[str, Any]]) -> None:
    """Set contacts' call fields (``call_fields``) alone, in one statement.

    This leaves ``version``, ``updated_at`` and the history alone; a contact
    whose fields already say so is not written again (PostgreSQL).
    """
    if not fields:
        return
    rows = [{"b_id": contact_id, **values} for contact_id, values in sorted(fields.items())]
    if not is_postgresql(conn):
        conn.execute(
            update(contacts)
            .where(contacts.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in CALL_FIELDS}),
            rows,
        )
        return
    conn.execute(_call_fields_update(), rows_parameter(("b_id", *CALL_FIELDS), rows))


@lru_cache(maxsize=1)
def _call_fields_update() -> Update:
    """PostgreSQL's ``write_call_fields``: built once (db/bulk.py, ``rows_source``)."""
    given = rows_source(contacts, ("b_id", *CALL_FIELDS), _KEYS[:1]).subquery()
    stored = tuple_(*(contacts.c[name] for name in CALL_FIELDS))
    return (
        update(contacts)
        .where(
            contacts.c.id == given.c.b_id,
            stored.is_distinct_from(tuple_(*(given.c[name] for name in CALL_FIELDS))),
        )
        .values({name: given.c[name] for name in CALL_FIELDS})
    )


def refresh_call_fields(conn: Connection, contact_ids: Collection[str]) -> None:
    """Recompute the contacts' call fields from their ledger rows and write them alone."""
    write_call_fields(conn, call_fields(conn, contact_ids))
