"""The naive peer of ``worker_throughput.py``, written here and not in the package.

One Celery task per event doing what a first, straightforward implementation would: an
SQLAlchemy ORM session loads the inbox row and the contact (locked), merges the event into
Python objects, bumps the version, adds the inbox row and the history record, and commits.
Started as ``celery -A _naive_tasks worker ...`` with ``bench/`` on ``PYTHONPATH``;
``BENCH_DATABASE_URL`` and ``BENCH_BROKER_URL`` name the database and the broker.

``simple_merge`` is a cut-down merge (per-field last-writer-wins by ``occurred_at`` then
``event_id``, confidence threshold, tag union, sticky statuses, sticky do-not-call) shared
with the benchmark's raw-SQL "database limit", so both peers do the same kind of work.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy import DateTime, Engine, Integer, String, Text, create_engine, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from contact_sync.worker.celery_app import delivery_options, event_queues, uses_amqp

TASK_NAIVE = "bench.naive_apply"
STICKY = frozenset({"converted", "customer", "churned", "do_not_contact"})
STANDARD = (
    "first_name",
    "last_name",
    "email",
    "phone_secondary",
    "job_title",
    "timezone",
    "preferred_contact_method",
)
MIN_CONFIDENCE = 0.5


def simple_merge(state: dict[str, Any], event: dict[str, Any]) -> list[dict[str, Any]]:
    """Merge ``event`` into ``state`` in place; returns the changes (empty: nothing changed).

    ``state`` holds ``custom_fields``, ``tags``, ``provenance``, ``lead_status``,
    ``do_not_call`` and the standard fields. Times are compared as fixed-width UTC text.
    """
    extraction = event.get("extraction") or {}
    provenance: dict[str, Any] = state["provenance"]
    seen = {
        "source": "call",
        "observed_at": event["occurred_at"],
        "event_id": event["event_id"],
        "call_id": event["call_id"],
    }
    key = (event["occurred_at"], event["event_id"])
    changes: list[dict[str, Any]] = []

    def newer(name: str) -> bool:
        current = provenance.get(name)
        return current is None or key > (current["observed_at"], current["event_id"])

    def put(name: str, old: Any, new: Any) -> None:
        provenance[name] = seen
        if old != new:
            changes.append({"field": name, "old": old, "new": new})

    for field, raw in (extraction.get("custom_fields") or {}).items():
        wrapped = isinstance(raw, dict) and "value" in raw
        value = raw["value"] if wrapped else raw
        confidence = raw.get("confidence") if wrapped else None
        if value is None or (confidence is not None and confidence < MIN_CONFIDENCE):
            continue
        name = f"custom_fields.{field}"
        if newer(name):
            put(name, state["custom_fields"].get(field), value)
            state["custom_fields"][field] = value
    for name, value in (extraction.get("contact") or {}).items():
        if value is not None and name in STANDARD and newer(name):
            put(name, state[name], value)
            state[name] = value
    for tag in extraction.get("tags") or []:
        if tag not in state["tags"]:
            changes.append({"field": "tags", "old": list(state["tags"]), "new": [tag]})
            state["tags"].append(tag)
    status = extraction.get("lead_status")
    if status and state["lead_status"] not in STICKY and newer("lead_status"):
        put("lead_status", state["lead_status"], status)
        state["lead_status"] = status
    if extraction.get("do_not_call") and not state["do_not_call"]:
        put("do_not_call", False, True)
        state["do_not_call"] = True
    return changes


class Base(DeclarativeBase):
    """Minimal ORM classes mapped onto the project's tables."""


class Contact(Base):
    """A row of ``contacts`` (only the columns the merge reads or writes)."""

    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(36))
    phone: Mapped[str | None] = mapped_column(String(16))
    phone_secondary: Mapped[str | None] = mapped_column(String(16))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(320))
    job_title: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(64))
    preferred_contact_method: Mapped[str | None] = mapped_column(String(32))
    lead_status: Mapped[str] = mapped_column(String(64))
    do_not_call: Mapped[bool]
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSONB)
    tags: Mapped[list[str]] = mapped_column(JSONB)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProcessedEvent(Base):
    """A row of the inbox, ``processed_events``."""

    __tablename__ = "processed_events"
    team_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    contact_id: Mapped[str | None] = mapped_column(String(36))
    outcome: Mapped[str] = mapped_column(String(16))
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ContactHistory(Base):
    """A row of ``contact_history``."""

    __tablename__ = "contact_history"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36))
    team_id: Mapped[str] = mapped_column(String(36))
    version_before: Mapped[int | None] = mapped_column(Integer)
    version_after: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(200))
    call_id: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    changes: Mapped[list[Any]] = mapped_column(JSONB)
    skipped: Mapped[list[Any]] = mapped_column(JSONB)
    summary: Mapped[str | None] = mapped_column(Text)


app = Celery("bench_naive", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/11"))
# The worker's own delivery settings and queue (JSON only, acks_late, no results, no events).
app.conf.update(delivery_options(int(os.environ.get("BENCH_PREFETCH", "4"))))
if uses_amqp(app.conf.broker_url):
    # The project's quorum queue, declared exactly as its worker and publishers declare it.
    app.conf.update(task_queues=event_queues())
_engine: Engine | None = None


def _get_engine() -> Engine:
    # Made on first use, so in the forked child that runs tasks, never shared across a fork.
    global _engine
    if _engine is None:
        _engine = create_engine(os.environ["BENCH_DATABASE_URL"], pool_size=1)
    return _engine


@app.task(name=TASK_NAIVE, acks_late=True)  # type: ignore[untyped-decorator]
def naive_apply(event: dict[str, Any]) -> str:
    """Apply one event the straightforward ORM way; returns the outcome."""
    now = datetime.now(UTC)
    with Session(_get_engine()) as session:
        if session.get(ProcessedEvent, (event["team_id"], event["event_id"])) is not None:
            return "duplicate"
        if event.get("contact_id"):
            contact = session.get(Contact, event["contact_id"], with_for_update=True)
        else:
            contact = session.scalars(
                select(Contact)
                .where(
                    Contact.team_id == event["team_id"],
                    or_(Contact.phone == event["phone"], Contact.phone_secondary == event["phone"]),
                )
                .with_for_update()
            ).first()
        if contact is None or contact.team_id != event["team_id"]:
            return "not_found"
        state: dict[str, Any] = {name: getattr(contact, name) for name in STANDARD}
        state.update(
            custom_fields=dict(contact.custom_fields),
            tags=list(contact.tags),
            provenance=dict(contact.provenance),
            lead_status=contact.lead_status,
            do_not_call=contact.do_not_call,
        )
        changes = simple_merge(state, event)
        before = contact.version
        if changes:
            for name, value in state.items():
                setattr(contact, name, value)
            contact.version = before + 1
            contact.updated_at = now
        session.add(
            ProcessedEvent(
                event_id=event["event_id"],
                team_id=event["team_id"],
                contact_id=contact.id,
                outcome="applied" if changes else "no_change",
                processed_at=now,
            )
        )
        session.add(
            ContactHistory(
                id=str(uuid.uuid4()),
                contact_id=contact.id,
                team_id=contact.team_id,
                version_before=before,
                version_after=contact.version,
                source="call",
                event_id=event["event_id"],
                call_id=event["call_id"],
                occurred_at=datetime.fromisoformat(event["occurred_at"]),
                recorded_at=now,
                changes=changes,
                skipped=[],
                summary=(event.get("extraction") or {}).get("summary"),
            )
        )
        try:
            session.commit()
        except IntegrityError:  # the same event committed by the other process meanwhile
            session.rollback()
            return "duplicate"
    return "applied" if changes else "no_change"
