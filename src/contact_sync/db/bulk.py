"""Set-based writes of many rows on PostgreSQL: one short statement, the rows one JSON parameter.

SQLAlchemy sends a list of rows as multi-row ``VALUES`` statements
("insertmanyvalues"), or one ``Bind``/``Execute`` per row for an update: a
statement text as long as the batch, which psycopg converts again on every
execution (it caches the conversion of short statements only), and
parameters converted one value at a time in Python. Here the rows travel as
one JSON array, written by orjson in one call, and PostgreSQL reads them
back as typed rows (``jsonb_to_recordset``): the statement is the same for
any number of rows, so psycopg converts it once and PostgreSQL runs its
prepared plan. Arrays of text (``unnest``) were tried first: psycopg escapes
each element of a text array with a regular expression, which cost more
than it saved (README, Performance). SQLite keeps the row lists.

New rows in bulk (an upsert's or an import's chunk: contacts and their custom-field
side rows) go by COPY instead, from ``COPY_FROM_ROWS`` rows on (``insert_rows``).
Statements on these rows are built once per shape (``rows_source``) and executed
with the rows as their parameter.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from psycopg import sql
from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """The rows as JSON text: orjson writes times itself, the json module's fallback is told how.

    A ``Decimal`` (the side rows' numbers) goes as its exact text, which
    PostgreSQL reads into a ``numeric`` column as it would a number.
    """
    try:
        return orjson.dumps(rows, default=_decimal).decode()
    except TypeError:  # a value orjson refuses (see db/engine.py): PostgreSQL judges it
        return json.dumps(rows, default=_iso)


def _decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return _decimal(value)


def is_postgresql(conn: Connection) -> bool:
    """Whether the connection speaks PostgreSQL (``jsonb_to_recordset``)."""
    return conn.dialect.name == "postgresql"


# The parameter that carries the rows of a statement built on ``rows_source``.
JSON_ROWS = "json_rows"
JSON_ROWS_COUNT = "json_rows_count"  # how many: the statement's LIMIT (``rows_source``)
Extra = tuple[tuple[str, TypeEngine[Any]], ...]


@lru_cache(maxsize=256)
def rows_source(table: Table, names: tuple[str, ...], extra: Extra = ()) -> Select[Any]:
    """``SELECT`` of rows (each with ``names``) given at execution, typed as ``table``'s columns.

    The rows travel as the parameter ``JSON_ROWS`` (``rows_parameter``): one
    JSON document, times as ISO 8601 with their offset; row order is kept. A
    name that is not a column of ``table`` takes its type from ``extra``. Built
    once per shape, as the statements on it should be (``functools.lru_cache``
    on their builders): building them again for every batch (columns, proxies,
    coercions) cost a five-event transaction more CPU than its rows did.
    """
    types = {name: dict(extra).get(name) or table.c[name].type for name in names}
    records = (
        func.jsonb_to_recordset(cast(bindparam(JSON_ROWS, type_=Text()), JSONB))
        .table_valued(*(column(name, types[name]) for name in names))
        .render_derived(with_types=True)
    )
    # The LIMIT is the number of rows given, so it drops none: it is there for the
    # planner, which takes jsonb_to_recordset for 100 rows whatever it is given. A
    # group of a few events was then joined to the whole table by a hash join over a
    # sequential scan (1-3 ms for each of its contact update, side-row delete and
    # inbox update in a team of 2,000 contacts; bench/profile_apply.py --batch 4).
    # A LIMIT parameter is taken for 10 rows in a prepared (generic) plan and for its
    # value in the first executions' plans: the joins go by the keys' indexes
    # (docs/design.md §6, "Plans").
    return select(*(records.c[name] for name in names)).limit(
        bindparam(JSON_ROWS_COUNT, type_=Integer())
    )


def rows_parameter(names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The execution parameters of a statement on ``rows_source(..., names)``: ``rows``."""
    keys = [str(name) for name in names]  # column names are a subclass of str: orjson refuses
    return given_rows([{key: row[key] for key in keys} for row in rows])


def given_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``rows_parameter`` of rows built with exactly the statement's names (plain ``str``
    keys, in any order: ``jsonb_to_recordset`` reads each column by its key), sent as
    they are rather than copied key by key (the event apply's hot path)."""
    return {JSON_ROWS: _rows_json(rows), JSON_ROWS_COUNT: len(rows)}


# From this many rows on, PostgreSQL takes new rows by COPY: an upsert of 2,000 new
# contacts spent 0.7 ms a row in INSERT executemany (a statement a row in psycopg's
# pipeline), most of the upsert's time (bench/upsert_contacts.py, docs/design.md §14).
COPY_FROM_ROWS = 50


def _json_text(value: Any) -> str:
    """A JSON column's value as COPY takes it, encoded as the engine encodes parameters."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson refuses (db/engine.py): PostgreSQL judges it
        return json.dumps(value)


def _copy(conn: Connection, table: Table, columns: Sequence[str], rows: list[Any]) -> None:
    json_columns = {name for name in columns if isinstance(table.c[name].type, JSON)}
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    # The DBAPI connection of the caller's transaction: the rows are in it.
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        if not json_columns:  # the side rows of custom fields: each row's values at C speed
            values = operator.itemgetter(*columns)
            for row in rows:
                copy.write_row(values(row))
            return
        for row in rows:
            copy.write_row(
                [_json_text(row[name]) if name in json_columns else row[name] for name in columns]
            )


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows``, one statement per set of columns given.

    On PostgreSQL by COPY for many, else as one JSON parameter (``rows_source``):
    executemany sent a Bind and an Execute per row, a five-event batch's side rows
    costing more than the rest of its writes. SQLite takes the list of rows.
    """
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for columns, group in groups.items():
        if len(group) >= COPY_FROM_ROWS:
            _copy(conn, table, columns, group)
        else:
            conn.execute(_insert_from_rows(table, columns), rows_parameter(columns, group))


@lru_cache(maxsize=64)
def _insert_from_rows(table: Table, columns: tuple[str, ...]) -> Any:
    return insert(table).from_select(columns, rows_source(table, columns))
