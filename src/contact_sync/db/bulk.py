"""Set-based writes of many rows on PostgreSQL: one statement whose parameters are arrays.

SQLAlchemy sends a list of rows as multi-row ``VALUES`` statements
("insertmanyvalues"): a statement text as long as the batch, which psycopg
converts again on every execution (it caches the conversion of short
statements only) and PostgreSQL plans anew. ``unnest`` of one array a column
keeps the statement short and the same for any number of rows, so psycopg
converts it once and PostgreSQL runs its prepared plan (measured with
``bench/profile_apply.py``: README, Performance). SQLite has no arrays: the
callers keep the row lists there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Select, Table, Text, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from contact_sync.db.engine import json_text


def is_postgresql(conn: Connection) -> bool:
    """Whether the connection speaks PostgreSQL (arrays and ``unnest``)."""
    return conn.dialect.name == "postgresql"


def unnest_rows(
    table: Table,
    names: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    extra: Mapping[str, TypeEngine[Any]] | None = None,
) -> Select[Any]:
    """``SELECT`` of ``rows`` (each with ``names``), typed as ``table``'s columns, from arrays.

    A name that is not a column of ``table`` takes its type from ``extra``.
    JSON values are sent as text and cast back in the statement: an array of
    JSON lists would be read as a nested array. The selected columns are
    labelled with their names.
    """
    types = {name: (extra or {}).get(name) or table.c[name].type for name in names}
    arrays = []
    for name in names:
        values = [row[name] for row in rows]
        array_type: TypeEngine[Any] = types[name]
        if isinstance(array_type, JSON):
            values = [None if value is None else json_text(value) for value in values]
            array_type = Text()
        arrays.append(bindparam(f"u_{name}", values, type_=ARRAY(array_type)))
    derived = func.unnest(*arrays).table_valued(*names).render_derived()
    return select(
        *(
            cast(derived.c[name], types[name]).label(name)
            if isinstance(types[name], JSON)
            else derived.c[name]
            for name in names
        )
    )
