"""Engines configured for each backend, and a helper to hide passwords."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


def _sqlite_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # WAL lets the API read while the worker writes; the busy timeout makes a
    # second writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # SQLite's own lower() folds ASCII only; search must fold "Élodie" too.
    dbapi_connection.create_function("lower", 1, _sqlite_lower, deterministic=True)


def _sqlite_begin(conn: Any) -> None:
    # Take the write lock at BEGIN so read-then-write transactions serialise
    # instead of failing with "database is locked" on upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _session_in_utc(dbapi_connection: Any, _record: Any) -> None:
    # Timestamps then arrive already in UTC, and reading them costs no
    # conversion (db/types.py). A SET, not a startup option: poolers refuse those.
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _json_dumps(value: Any) -> bytes | str:
    """orjson for JSON parameters (several times faster), the json module where it refuses.

    orjson refuses what values are checked for before they get here (integers
    past 64 bits, lone surrogates, non-text keys); if one slips through, the
    json module writes it as before and PostgreSQL judges it.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value)


def make_engine(url: str, *, pool_size: int = 5, pre_ping: bool = True) -> Engine:
    """An engine for ``url`` with the settings each backend needs.

    ``pre_ping`` tests a pooled connection before use; the worker turns it
    off (a round trip per transaction) because it retries a dropped
    connection as a transient error anyway.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed, connect_args={"timeout": 30, "isolation_level": None}, poolclass=NullPool
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(
        parsed,
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=pool_size,
        # JSONB columns (custom fields, tags, provenance) are decoded on every
        # read; orjson does it several times faster than the json module.
        json_deserializer=orjson.loads,
        json_serializer=_json_dumps,
    )
    if parsed.get_backend_name() == "postgresql":
        event.listen(engine, "connect", _session_in_utc)
    return engine


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given minus any credentials
        return url.split("@")[-1]
