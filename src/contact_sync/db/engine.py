"""Engines configured for each backend, and a helper to hide passwords."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import orjson
from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool

# The forms ``--database-url`` and ``CONTACT_SYNC_DATABASE_URL`` accept, for error messages.
ACCEPTED_URLS = (
    "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (postgres:// and postgresql+psycopg:// "
    "work too) or sqlite:///PATH"
)
# Seconds to wait for PostgreSQL to accept a connection: libpq's default is forever, so an
# unreachable host hung every API request and CLI command. A URL's ?connect_timeout= wins.
CONNECT_TIMEOUT_SECONDS = 5
# SQLSTATE classes that mean the server cannot serve now: connection exception (08),
# insufficient resources (53), operator intervention (57: shutdown, statement timeout),
# system error (58).
_OUTAGE_CLASSES = ("08", "53", "57", "58")
# SQLite's messages for a database that is busy or cannot be opened right now.
_SQLITE_OUTAGES = ("database is locked", "unable to open database file", "disk I/O error")


class InvalidDatabaseURL(ValueError):
    """A URL this service cannot use; the message hides the password and names the forms."""

    def __init__(self, url: str) -> None:
        super().__init__(f"invalid database URL {safe_url(url)}: use {ACCEPTED_URLS}")


def database_url(url: str) -> URL:
    """``url`` parsed, with PostgreSQL on psycopg 3 whichever way it was spelled.

    Heroku-style ``postgres://`` and plain ``postgresql://`` both mean psycopg 3,
    the only PostgreSQL driver installed; any other scheme or driver is refused
    here, with the accepted forms, instead of as a missing module later.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidDatabaseURL(url) from None
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed
    raise InvalidDatabaseURL(url)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is unreachable or cannot serve now.

    True for a refused or dropped connection, a pool that gave no connection in
    time, a server shutting down or out of connections; false for errors a retry
    would repeat (a bug, a missing table), which must stay visible as such.
    """
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig).startswith(_SQLITE_OUTAGES)
    import psycopg

    if isinstance(orig, psycopg.OperationalError):
        sqlstate = getattr(orig, "sqlstate", None)
        return sqlstate is None or sqlstate[:2] in _OUTAGE_CLASSES
    return isinstance(orig, psycopg.InterfaceError)


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


def json_text(value: Any) -> str:
    """``value`` as JSON text, written as JSON parameters are (``_json_dumps``)."""
    written = _json_dumps(value)
    return written.decode() if isinstance(written, bytes) else written


def make_engine(url: str, *, pool_size: int = 5, pre_ping: bool = True) -> Engine:
    """An engine for ``url`` with the settings each backend needs.

    ``pre_ping`` tests a pooled connection before use; the worker turns it
    off (a round trip per transaction) because it retries a dropped
    connection as a transient error anyway. Raises ``InvalidDatabaseURL``
    for a URL it cannot use.
    """
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed, connect_args={"timeout": 30, "isolation_level": None}, poolclass=NullPool
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args = (
        {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    )
    engine = create_engine(
        parsed,
        connect_args=connect_args,
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=pool_size,
        # JSONB columns (custom fields, tags, provenance) are decoded on every
        # read; orjson does it several times faster than the json module.
        json_deserializer=orjson.loads,
        json_serializer=_json_dumps,
    )
    event.listen(engine, "connect", _session_in_utc)
    return engine


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given minus any credentials
        return url.split("@")[-1]
