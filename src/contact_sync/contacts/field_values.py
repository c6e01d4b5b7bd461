"""The typed side table of custom-field values, kept by the contact writer (docs/design.md §13).

``custom_field_values`` holds one row per scalar value of a contact's
``custom_fields`` (and one per string of an array), typed by what the JSON
value is, not by the team's definitions: defining, redefining or deleting a
field changes no row, and the ``cf.`` filters pick the kinds their field's
type reads. Kinds:

- ``n`` a number (``num``); ``b`` a boolean (``txt`` ``true``/``false``);
- ``d`` a string in the canonical date shape, ``t`` in the canonical UTC
  date-time shape, ``s`` any other string (``txt``);
- ``a`` an array (no value: what ``exists`` of a multi_select reads), and
  ``e`` each distinct string in it (``txt``).

JSON null and objects get no row. A string longer than ``MAX_INDEXED``
characters is kept with ``txt`` null (a b-tree entry is limited to a third
of a page): it still exists, and equality on a value that long is asked of
``custom_fields`` itself (``contacts/custom_filters``).

Only ``contacts/writer.py`` calls the writes here, in the same statements'
transaction as the contact rows: the table is what ``custom_fields``
implies, always (``tests/test_field_values.py`` checks it as a property).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Delete, delete, select, tuple_

from contact_sync.db.bulk import given_rows, insert_rows, is_postgresql, rows_source
from contact_sync.db.tables import contacts, custom_field_values

MAX_INDEXED = 500  # characters of a string kept in ``txt`` (4 bytes each at most)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?\+00:00"
)
STRING_KINDS = ("s", "d", "t")


def string_kind(text: str) -> str:
    """``d``, ``t`` or ``s``: whether ``text`` has a canonical date or date-time's shape."""
    if _DATE.fullmatch(text):
        return "d"
    if _DATETIME.fullmatch(text):
        return "t"
    return "s"


def _text(text: str) -> str | None:
    return text if len(text) <= MAX_INDEXED else None


def _number(value: int | float) -> Decimal | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _value_rows(key: str, value: Any) -> list[tuple[str, str, Decimal | None, str | None]]:
    if isinstance(value, bool):
        return [(key, "b", None, "true" if value else "false")]
    if isinstance(value, int | float):
        number = _number(value)
        return [] if number is None else [(key, "n", number, None)]
    if isinstance(value, str):
        return [(key, string_kind(value), None, _text(value))]
    if isinstance(value, list):
        strings = dict.fromkeys(v for v in value if isinstance(v, str) and len(v) <= MAX_INDEXED)
        return [(key, "a", None, None)] + [(key, "e", None, v) for v in strings]
    return []


def value_rows(
    team_id: str, contact_id: str, fields: Mapping[str, Any], keys: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The side table's rows for a contact's ``custom_fields`` (only ``keys``, if given)."""
    chosen = fields.keys() if keys is None else keys
    return [
        {"team_id": team_id, "contact_id": contact_id, "key": k, "kind": kind, "num": n, "txt": t}
        for name in chosen
        if name in fields
        for k, kind, n, t in _value_rows(name, fields[name])
    ]


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """The keys whose value differs (added, removed or changed; ``1`` and ``True`` differ)."""
    return {
        key
        for key in before.keys() | after.keys()
        if key not in before
        or key not in after
        or type(before[key]) is not type(after[key])
        or before[key] != after[key]
    }


def insert_values(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert side rows: by COPY when there are many (an import's chunk has ~10 a contact)."""
    if rows:
        insert_rows(conn, custom_field_values, rows)


def replace_values(
    conn: Connection, changes: Sequence[tuple[str | None, str, Mapping[str, Any] | None, Any]]
) -> None:
    """Rewrite the side rows of changed contacts: ``(team_id, contact_id, before, after)``.

    With ``before`` only the keys that changed are rewritten; without it every
    row of the contact. A missing ``team_id`` is read from ``contacts``.
    """
    if not changes:
        return
    missing = sorted({cid for team, cid, _, _ in changes if team is None})
    teams_of: dict[str, str] = {}
    if missing:
        found = conn.execute(
            select(contacts.c.id, contacts.c.team_id).where(contacts.c.id.in_(missing))
        )
        teams_of = {row.id: row.team_id for row in found}
    whole: list[str] = []
    partial: list[tuple[str, str]] = []
    rows: list[dict[str, Any]] = []
    for team_id, contact_id, before, after in changes:
        team = team_id or teams_of.get(contact_id)
        if team is None:
            continue
        fields = after or {}
        if before is None:
            whole.append(contact_id)
            rows += value_rows(team, contact_id, fields)
            continue
        keys = sorted(changed_keys(before, fields))
        partial += [(contact_id, key) for key in keys]
        rows += value_rows(team, contact_id, fields, keys)
    if whole:
        conn.execute(delete(custom_field_values).where(custom_field_values.c.contact_id.in_(whole)))
    if partial:  # one statement for the batch, not one per key
        conn.execute(*_delete_pairs(conn, partial))
    insert_values(conn, rows)


def _delete_pairs(
    conn: Connection, pairs: list[tuple[str, str]]
) -> tuple[Delete, dict[str, str] | None]:
    """``DELETE`` of the rows of these (contact, key) pairs.

    On PostgreSQL the pairs travel as one JSON parameter joined by ``USING``: a
    row-value ``IN`` list is a new statement text for every batch size, planned
    afresh each time, and it cost a batch of 500 events about a fifth of its
    rate (bench/worker_throughput.py, batch mode).
    """
    cfv = custom_field_values
    if not is_postgresql(conn):
        return delete(cfv).where(tuple_(cfv.c.contact_id, cfv.c.key).in_(pairs)), None
    return _delete_rows(), given_rows([{"contact_id": c, "key": k} for c, k in pairs])


_PAIR = ("contact_id", "key")


@lru_cache(maxsize=1)
def _delete_rows() -> Delete:
    """PostgreSQL's ``_delete_pairs``: built once (db/bulk.py, ``rows_source``)."""
    cfv = custom_field_values
    given = rows_source(cfv, _PAIR).subquery()
    return delete(cfv).where(cfv.c.contact_id == given.c.contact_id, cfv.c.key == given.c.key)


def delete_values(conn: Connection, contact_id: str) -> None:
    """Remove a deleted contact's side rows."""
    conn.execute(delete(custom_field_values).where(custom_field_values.c.contact_id == contact_id))


# The same rows computed by PostgreSQL for every contact at once (the migration's backfill).
_PG_SCALARS = """
INSERT INTO custom_field_values (team_id, contact_id, key, kind, num, txt)
SELECT c.team_id, c.id, f.key, v.kind, v.num, v.txt
FROM contacts c CROSS JOIN LATERAL jsonb_each(c.custom_fields) f
CROSS JOIN LATERAL (SELECT
  CASE jsonb_typeof(f.value)
    WHEN 'number' THEN 'n' WHEN 'boolean' THEN 'b' WHEN 'array' THEN 'a'
    WHEN 'string' THEN CASE
      WHEN f.value #>> '{}' ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN 'd'
      WHEN f.value #>> '{}' ~ %(datetime)s THEN 't'
      ELSE 's' END
  END AS kind,
  CASE WHEN jsonb_typeof(f.value) = 'number' THEN (f.value #>> '{}')::numeric END AS num,
  CASE jsonb_typeof(f.value)
    WHEN 'boolean' THEN f.value #>> '{}'
    WHEN 'string' THEN CASE WHEN char_length(f.value #>> '{}') <= %(longest)s
      THEN f.value #>> '{}' END
  END AS txt) v
WHERE v.kind IS NOT NULL
"""
_PG_ELEMENTS = """
INSERT INTO custom_field_values (team_id, contact_id, key, kind, num, txt)
SELECT DISTINCT c.team_id, c.id, f.key, 'e', NULL::numeric, e.value #>> '{}'
FROM contacts c CROSS JOIN LATERAL jsonb_each(c.custom_fields) f
CROSS JOIN LATERAL jsonb_array_elements(
  CASE WHEN jsonb_typeof(f.value) = 'array' THEN f.value ELSE '[]'::jsonb END) e
WHERE jsonb_typeof(e.value) = 'string' AND char_length(e.value #>> '{}') <= %(longest)s
"""
_PG_DATETIME = "^" + _DATETIME.pattern + "$"


def rebuild_all(conn: Connection) -> None:
    """Recompute the whole side table from ``custom_fields`` (the backfill; benchmarks' seed).

    PostgreSQL computes the rows itself; SQLite (development databases) goes
    through ``value_rows``, a thousand contacts at a time.
    """
    conn.execute(delete(custom_field_values))
    if conn.dialect.name == "postgresql":
        params = {"datetime": _PG_DATETIME, "longest": MAX_INDEXED}
        for statement in (_PG_SCALARS, _PG_ELEMENTS):
            conn.exec_driver_sql(statement, params)
        return
    columns = (contacts.c.team_id, contacts.c.id, contacts.c.custom_fields)
    after = ""
    while True:
        chunk = conn.execute(
            select(*columns).where(contacts.c.id > after).order_by(contacts.c.id).limit(1000)
        ).all()
        if not chunk:
            return
        insert_values(conn, [r for row in chunk for r in value_rows(row[0], row[1], row[2])])
        after = chunk[-1].id
