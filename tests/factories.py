"""Builders of test data: call events, teams and keys, contacts, and Celery messages.

Tests and benches build what they need here rather than by hand, so that a change of the
event contract or of the message format is made once. A test that sends something malformed
starts from a valid value built here and breaks it, so the one thing wrong is visible.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from contact_sync.accounts.teams import IssuedKey, Team, create_team, issue_api_key
from contact_sync.calls.apply import Outcome, apply_payloads
from contact_sync.db.tables import calls, contacts, metadata
from contact_sync.db.unit_of_work import unit_of_work

# --- call events (apply service, worker, API and bench) --------------------------

# Events happen a day before the test runs: in the past, so never "in the future".
EVENT_BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def call_event(team_id: str, *, minutes: float = 0, **fields: Any) -> dict[str, Any]:
    """A valid ``call.completed`` payload ``minutes`` after ``EVENT_BASE``; ``fields`` override.

    Random event and call ids make every call a new event; pass ``event_id`` to repeat one.
    """
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


# --- teams, keys and contacts (through the real services) --------------------------

# Where a builder writes: an engine (a transaction of its own, committed), or the test's
# connection (the ``conn`` fixture: a savepoint in its transaction, rolled back after the test).
Database = Engine | Connection


@contextmanager
def writing(db: Database) -> Iterator[Connection]:
    if isinstance(db, Connection):
        with db.begin_nested():
            yield db
        return
    with db.begin() as conn:
        yield conn


def make_team(db: Database, name: str | None = None, **options: Any) -> Team:
    """A team (US unless ``region`` says otherwise); a unique name unless one is given."""
    with writing(db) as conn:
        return create_team(conn, name=name or f"Team {uuid.uuid4().hex[:8]}", **options)


def make_key(db: Database, team_id: str, *, scope: str = "write") -> IssuedKey:
    """An API key of the team (``scope`` ``read`` or ``write``)."""
    with writing(db) as conn:
        return issue_api_key(conn, team_id=team_id, scope=scope)


def make_contact(db: Database, team_id: str, **fields: Any) -> Any:
    """A contact created through the store, as a person would (Ada Lovelace unless overridden)."""
    from contact_sync.contacts.store import create_contact

    data: dict[str, Any] = {"first_name": "Ada", "last_name": "Lovelace", **fields}
    with writing(db) as conn:
        return create_contact(conn, team_id=team_id, data=data)


@contextmanager
def reading(db: Database) -> Iterator[Connection]:
    """A connection to read with: the test's own (``conn``), or a new one of the engine."""
    if isinstance(db, Connection):
        yield db
        return
    with db.connect() as conn:
        yield conn


def contact_row(db: Database, contact_id: str) -> Any:
    """The stored contact row (with provenance and version)."""
    with reading(db) as conn:
        return conn.execute(select(contacts).where(contacts.c.id == contact_id)).one()


def call_rows(db: Database, team_id: str) -> list[Any]:
    """The team's rows of the calls ledger, by call id."""
    stmt = select(calls).where(calls.c.team_id == team_id).order_by(calls.c.call_id)
    if isinstance(db, Connection):
        return list(db.execute(stmt))
    with db.connect() as conn:
        return list(conn.execute(stmt))


def merged_in_time_order(row: Any, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The oracle: the contact ``row`` after each distinct event once, in time order.

    Uses the pure merge only; returns the mergeable fields as they should be stored.
    """
    from contact_sync.calls.apply import STATE_FIELDS
    from contact_sync.calls.events import parse_event
    from contact_sync.calls.merge import ContactState, MergePolicy, merge
    from contact_sync.contacts.records import provenance_from_json

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


def apply_batch(engine: Engine, payloads: Sequence[Any], **options: Any) -> list[Outcome]:
    """Apply ``payloads`` in a unit of work of their own, committed, as one delivery is."""
    with unit_of_work(engine) as uow:
        outcomes = apply_payloads(uow.conn, payloads, **options)
        uow.commit()
    return outcomes


def empty_tables(engine: Engine) -> None:
    """Delete every row of every table: a clean slate when several processes wrote.

    DELETE rather than TRUNCATE: on tables of a few rows TRUNCATE costs PostgreSQL ~250 ms
    (new files for each table), DELETE ~15 ms, and the suite empties the tables before more
    than a thousand tests. The lock keeps what TRUNCATE guaranteed: it waits for the
    transactions in flight (a worker's), and none writes until the tables are empty.
    """
    names = [t.name for t in reversed(metadata.sorted_tables)]  # children first
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE"))
        for name in names:
            conn.execute(text(f"DELETE FROM {name}"))


# --- the calls ledger and the calling policy (scheduling tests) ---------------------


def insert_call(
    db: Database,
    team_id: str,
    contact_id: str,
    *,
    ended_at: datetime,
    outcome: str = "no_answer",
    direction: str = "outbound",
) -> str:
    """A row of the calls ledger, written directly (the event apply writes the real ones),
    and the contact's call fields recomputed by the contact writer, as the apply does."""
    from contact_sync.contacts.writer import refresh_call_fields
    from contact_sync.db.tables import calls

    call_id = f"call-{uuid.uuid4().hex}"
    with writing(db) as conn:
        conn.execute(
            calls.insert().values(
                id=str(uuid.uuid4()),
                team_id=team_id,
                contact_id=contact_id,
                call_id=call_id,
                event_id=f"evt-{call_id}",
                direction=direction,
                outcome=outcome,
                ended_at=ended_at,
                recorded_at=datetime.now(UTC),
            )
        )
        refresh_call_fields(conn, [contact_id])
    return call_id


def store_policy(db: Database, team_id: str, **policy: Any) -> Any:
    """Store a team's calling policy (as ``PUT /calling-policy`` would) and return the model."""
    from contact_sync.db.tables import calling_policies
    from contact_sync.scheduling.policy import CallingPolicy

    model = CallingPolicy.model_validate(policy)
    with writing(db) as conn:
        conn.execute(calling_policies.delete().where(calling_policies.c.team_id == team_id))
        conn.execute(
            calling_policies.insert().values(
                team_id=team_id,
                policy=model.model_dump(mode="json"),
                updated_at=datetime.now(UTC),
                updated_by=None,
            )
        )
    return model


# --- Celery messages as a non-Python publisher writes them -------------------------

QUEUE = "contact_sync.events"
TASK_APPLY = "contact_sync.apply_call_completed"
TASK_APPLY_BATCH = "contact_sync.apply_call_completed_batch"
# The third element of a protocol-2 body: no callbacks, errbacks, chain or chord.
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_NO_HEADERS: dict[str, Any] = {}


def task_body(
    args: list[Any], kwargs: dict[str, Any] | None = None, *, embed: dict[str, Any] | None = None
) -> bytes:
    """The JSON body of a protocol-2 task message: ``[args, kwargs, embed]``."""
    return json.dumps([args, kwargs or {}, embed or EMBED]).encode()


def task_headers(task: str = TASK_APPLY, **extra: Any) -> dict[str, Any]:
    """The headers a non-Python publisher sends: the language, the task, a fresh id, ``extra``."""
    return {"lang": "py", "task": task, "id": str(uuid.uuid4()), **extra}


def envelope(
    body: bytes,
    task: str = TASK_APPLY,
    *,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    headers: dict[str, Any] | None = _NO_HEADERS,
) -> str:
    """A Celery protocol-2 message in kombu's Redis envelope (docs/celery-message.md).

    ``headers`` default to those of ``task``; ``None`` leaves them out (a hostile message).
    Each call makes a new delivery tag: each push is a message of its own.
    """
    message: dict[str, Any] = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
    }
    chosen = task_headers(task) if headers is _NO_HEADERS else headers
    if chosen is not None:
        message["headers"] = chosen
    message["properties"] = {
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
        "delivery_info": {"exchange": "", "routing_key": QUEUE},
        "delivery_mode": 2,
        "priority": 0,
    }
    return json.dumps(message)


def task_envelope(args: list[Any], task: str = TASK_APPLY) -> str:
    """The message of a task call with positional ``args``."""
    return envelope(task_body(args), task)
