"""Shared fixtures: a fresh database per test session on each backend.

Integration tests take the ``engine`` fixture and run on both PostgreSQL and
SQLite; each test starts from empty tables. Builders of test data live in
``tests/factories.py``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import Team, create_team
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from tests.factories import empty_tables
from tests.services import postgres_server, rabbitmq_vhost, redis_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session; dropped afterwards."""
    with postgres_server() as server_url:
        name = f"contact_sync_test_{uuid.uuid4().hex[:12]}"
        admin = make_url(server_url).set(drivername="postgresql")
        admin_dsn = admin.render_as_string(hide_password=False)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[str]:
    """A fresh, migrated SQLite file for this session."""
    with tempfile.TemporaryDirectory(prefix="contact-sync-sqlite-") as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'test.sqlite3')}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Database 0 of a Redis server private to this run (its databases may be flushed)."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this run alone (``amqp://…/vhost``); deleted afterwards."""
    with rabbitmq_vhost() as url:
        yield url


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty, migrated database; the test runs once per backend."""
    fixture = {"postgresql": "postgres_url", "sqlite": "sqlite_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    return url


# The databases a test committed rows to: the next ``conn`` test there empties them first.
_COMMITTED_TO: set[str] = set()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on empty tables; what the test commits stays until the next test empties them.

    For tests where several connections or processes write (the worker, the API server).
    """
    engine = make_engine(database_url)
    empty_tables(engine)
    _COMMITTED_TO.add(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on empty PostgreSQL tables, for tests that only make sense there."""
    engine = make_engine(postgres_url)
    empty_tables(engine)
    _COMMITTED_TO.add(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _rollback_engines() -> Iterator[dict[str, Engine]]:
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def conn(database_url: str, _rollback_engines: dict[str, Engine]) -> Iterator[Connection]:
    """One connection in a transaction that is rolled back after the test.

    Cheaper than emptying the tables for tests that write through this connection alone:
    nothing they write is ever committed. Services never commit, so all of it is undone.
    """
    if database_url not in _rollback_engines:
        _rollback_engines[database_url] = make_engine(database_url)
    engine = _rollback_engines[database_url]
    if database_url in _COMMITTED_TO:
        empty_tables(engine)
        _COMMITTED_TO.discard(database_url)
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def team(engine: Engine) -> Team:
    """A US team."""
    with engine.begin() as conn:
        return create_team(conn, name="Acme Solar")


@pytest.fixture
def other_team(engine: Engine) -> Team:
    """A second team, for isolation checks."""
    with engine.begin() as conn:
        return create_team(conn, name="Rival Roofing")


@pytest.fixture
def pg_team(pg_engine: Engine) -> Team:
    """A US team on PostgreSQL."""
    with pg_engine.begin() as conn:
        return create_team(conn, name="Acme Solar")


@pytest.fixture
def pg_other_team(pg_engine: Engine) -> Team:
    """A second team on PostgreSQL."""
    with pg_engine.begin() as conn:
        return create_team(conn, name="Rival Roofing")
