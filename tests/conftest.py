"""Shared fixtures: a fresh database per test session on each backend.

Integration tests take the ``engine`` fixture and run on both PostgreSQL and
SQLite; each test starts from empty tables.
"""

from __future__ import annotations

import copy
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from contact_sync.apply import Outcome, apply_payloads
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.db.tables import metadata
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.teams import Team, create_team
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


def _truncate(engine: Engine) -> None:
    names = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(names)} CASCADE"))
        else:
            for name in names:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty, migrated database; the test runs once per backend."""
    fixture = {"postgresql": "postgres_url", "sqlite": "sqlite_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on empty tables."""
    engine = make_engine(database_url)
    _truncate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on empty PostgreSQL tables, for tests that only make sense there."""
    engine = make_engine(postgres_url)
    _truncate(engine)
    yield engine
    engine.dispose()


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


def make_contact(engine: Engine, team_id: str, **fields: Any) -> Any:
    """Create a contact through the real service (a factory for tests)."""
    from contact_sync.store import create_contact

    data: dict[str, Any] = {"first_name": "Ada", "last_name": "Lovelace", **fields}
    with engine.begin() as conn:
        return create_contact(conn, team_id=team_id, data=data)


# --- call events (apply service and worker tests) -------------------------------

# Events happen a day before the test runs: in the past, so never "in the future".
EVENT_BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def call_event(team_id: str, *, minutes: float = 0, **fields: Any) -> dict[str, Any]:
    """A valid ``call.completed`` payload ``minutes`` after ``EVENT_BASE``; ``fields`` override."""
    event: dict[str, Any] = {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "type": "call.completed",
        "schema_version": 1,
        "team_id": team_id,
        "call_id": f"call_{uuid.uuid4().hex[:16]}",
        "occurred_at": (EVENT_BASE + timedelta(minutes=minutes)).isoformat(),
        "outcome": "completed",
    }
    event.update(fields)
    return event


def contact_row(engine: Engine, contact_id: str) -> Any:
    """The stored contact row (with provenance and version)."""
    from sqlalchemy import select

    from contact_sync.db.tables import contacts

    with engine.connect() as conn:
        return conn.execute(select(contacts).where(contacts.c.id == contact_id)).one()


def merged_in_time_order(row: Any, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The oracle: the contact ``row`` after each distinct event once, in time order.

    Uses the pure merge only; returns the mergeable fields as they should be stored.
    """
    from dataclasses import fields as dataclass_fields

    from contact_sync.apply import STATE_FIELDS
    from contact_sync.events import parse_event
    from contact_sync.merge import ContactState, MergePolicy, merge
    from contact_sync.records import provenance_from_json

    now = datetime.now(UTC)
    distinct = {payload["event_id"]: payload for payload in payloads}
    events = sorted(
        (parse_event(payload, now=now) for payload in distinct.values()),
        key=lambda event: (event.occurred_at, event.event_id),
    )
    names = [f.name for f in dataclass_fields(ContactState)]
    state = ContactState(
        **{name: copy.deepcopy(getattr(row, name)) for name in names if name != "provenance"},
        provenance=provenance_from_json(row.provenance),
    )
    for event in events:
        state = merge(state, event, MergePolicy()).state
    return {name: getattr(state, name) for name in STATE_FIELDS}


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


def apply_batch(engine: Engine, payloads: Sequence[Any], **options: Any) -> list[Outcome]:
    """Apply ``payloads`` in a unit of work of their own, committed, as one delivery is."""
    with unit_of_work(engine) as uow:
        outcomes = apply_payloads(uow.conn, payloads, **options)
        uow.commit()
    return outcomes
