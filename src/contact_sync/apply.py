"""The apply use case: resolve the contact, claim the event, merge, store.

A batch of payloads is applied in one transaction with a savepoint per
event, so each keeps its own idempotency, dead letter and history record,
and one bad event never fails its batch-mates. The inbox row is claimed
first (``INSERT … ON CONFLICT``): a second delivery of the same event waits
for the first transaction and then sees it as a duplicate. The contact row
is then locked (``FOR NO KEY UPDATE`` on PostgreSQL; SQLite serialises
writers) for the few statements that follow, so no update is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Row, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contact_sync import dead_letters
from contact_sync.clock import utcnow
from contact_sync.contacts import ContactPatch
from contact_sync.db.tables import contact_history, contacts, processed_events
from contact_sync.errors import AmbiguousContact, ContactNotFound, TeamNotFound
from contact_sync.events import (
    CallCompleted,
    InvalidEvent,
    Reason,
    event_id_of,
    parse_event,
    team_id_of,
)
from contact_sync.ids import new_id
from contact_sync.merge import ContactState, MergePolicy, MergeResult, merge, observation
from contact_sync.phones import normalise_phone
from contact_sync.teams import Team, get_team

OutcomeName = Literal["applied", "no_change", "duplicate", "dead_lettered"]
PLACEHOLDER_NAME = "Unknown"
STATE_FIELDS = tuple(f.name for f in fields(ContactState) if f.name != "provenance")


@dataclass(frozen=True)
class Outcome:
    """What happened to one event."""

    outcome: OutcomeName
    event_id: str | None
    team_id: str | None
    contact_id: str | None = None
    reason: Reason | None = None
    message: str | None = None
    version: int | None = None


def _state_of(row: Row[Any]) -> ContactState:
    values = {name: getattr(row, name) for name in STATE_FIELDS}
    return ContactState(
        **{**values, "custom_fields": dict(row.custom_fields), "tags": list(row.tags)},
        provenance=dict(row.provenance),
    )


def _claim(conn: Connection, event: CallCompleted, now: datetime) -> bool:
    """Insert the inbox row; False if the event was applied before.

    A row left by a dead-lettered attempt is taken over, so a replay or a
    corrected redelivery of that event still applies once.
    """
    values = {
        "event_id": event.event_id,
        "team_id": event.team_id,
        "contact_id": None,
        "outcome": "applied",
        "processed_at": now,
    }
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = pg_insert(processed_events).values(values)
    else:
        stmt = sqlite_insert(processed_events).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[processed_events.c.event_id],
        set_={"outcome": "applied", "processed_at": now},
        where=processed_events.c.outcome == "dead_lettered",
    ).returning(processed_events.c.event_id)
    return conn.execute(stmt).first() is not None


def _find_by_phone(
    conn: Connection, team: Team, event: CallCompleted
) -> tuple[str, list[Row[Any]]]:
    assert event.phone is not None
    try:
        phone = normalise_phone(event.phone, team.default_region)
    except ValueError as exc:
        raise InvalidEvent("invalid_payload", f"phone: {exc}") from None
    if conn.dialect.name == "postgresql":
        # Serialise resolution of one number within a team, so two workers
        # seeing the same unknown number create one contact, not two.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"{team.id}:{phone}"},
        )
    rows = conn.execute(
        select(contacts)
        .where(
            contacts.c.team_id == team.id,
            or_(contacts.c.phone == phone, contacts.c.phone_secondary == phone),
        )
        .order_by(contacts.c.id)
        .limit(2)
        .with_for_update(key_share=True)
    ).all()
    return phone, list(rows)


def _resolve(conn: Connection, team: Team, event: CallCompleted) -> Row[Any] | str:
    """The locked contact row, or the E.164 number of a contact to create."""
    if event.contact_id is not None:
        row = conn.execute(
            select(contacts)
            .where(contacts.c.id == event.contact_id, contacts.c.team_id == team.id)
            .with_for_update(key_share=True)
        ).one_or_none()
        if row is None:
            raise ContactNotFound(f"no contact {event.contact_id} in this team")
        return row
    phone, rows = _find_by_phone(conn, team, event)
    if len(rows) > 1:
        raise AmbiguousContact(f"several contacts of this team have {phone}")
    return rows[0] if rows else phone


def _placeholder_name(event: CallCompleted, name: str) -> str:
    extracted = event.extraction.contact if event.extraction else None
    raw = getattr(extracted, name, None) if extracted else None
    if raw is None:
        return PLACEHOLDER_NAME
    try:
        value = getattr(ContactPatch.model_validate({name: raw}), name)
    except ValueError:
        return PLACEHOLDER_NAME
    return value if isinstance(value, str) else PLACEHOLDER_NAME


def _history(
    *,
    contact_id: str,
    event: CallCompleted,
    result: MergeResult,
    before: int | None,
    after: int,
    now: datetime,
) -> dict[str, Any]:
    extraction = event.extraction
    return {
        "id": new_id(),
        "contact_id": contact_id,
        "team_id": event.team_id,
        "version_before": before,
        "version_after": after,
        "source": "call",
        "event_id": event.event_id,
        "call_id": event.call_id,
        "api_key_id": None,
        "occurred_at": event.occurred_at,
        "recorded_at": now,
        "changes": result.changes,
        "skipped": result.skipped,
        "summary": extraction.summary if extraction else None,
    }


def _create(
    conn: Connection,
    team: Team,
    event: CallCompleted,
    phone: str,
    policy: MergePolicy,
    now: datetime,
) -> Outcome:
    # Placeholder names carry no provenance, so any call may fill them.
    start = ContactState(
        first_name=_placeholder_name(event, "first_name"),
        last_name=_placeholder_name(event, "last_name"),
        provenance={"phone": observation(event), "source": observation(event)},
    )
    result = merge(start, event, policy)
    state = result.state
    contact_id = new_id()
    row = {name: getattr(state, name) for name in STATE_FIELDS}
    conn.execute(
        insert(contacts).values(
            **row,
            id=contact_id,
            team_id=team.id,
            phone=phone,
            source="inbound-call",
            provenance=state.provenance,
            version=1,
            created_at=now,
            updated_at=now,
        )
    )
    # The creating event's record lists every value the new contact holds.
    final = {**row, "phone": phone, "source": "inbound-call"}
    changes = [
        {"field": name, "old": None, "new": value}
        for name, value in final.items()
        if name != "custom_fields" and value not in (None, False, [])
    ] + [
        {"field": f"custom_fields.{key}", "old": None, "new": value}
        for key, value in state.custom_fields.items()
    ]
    record = MergeResult(state, changes, result.skipped)
    conn.execute(
        insert(contact_history).values(
            _history(
                contact_id=contact_id, event=event, result=record, before=None, after=1, now=now
            )
        )
    )
    return Outcome("applied", event.event_id, team.id, contact_id, version=1)


def _apply_valid(
    conn: Connection,
    event: CallCompleted,
    teams: dict[str, Team],
    settings_policy: _Policy,
    now: datetime,
) -> Outcome:
    team = teams.get(event.team_id)
    if team is None:
        try:
            team = teams[event.team_id] = get_team(conn, team_id=event.team_id)
        except TeamNotFound:
            raise ContactNotFound(f"no team {event.team_id}") from None
    policy = settings_policy.for_team(team)
    if not _claim(conn, event, now):
        return Outcome("duplicate", event.event_id, team.id)
    resolved = _resolve(conn, team, event)
    if isinstance(resolved, str):
        outcome = _create(conn, team, event, resolved, policy, now)
    else:
        outcome = _update(conn, resolved, event, policy, now)
    conn.execute(
        update(processed_events)
        .where(processed_events.c.event_id == event.event_id)
        .values(contact_id=outcome.contact_id, outcome=outcome.outcome)
    )
    return outcome


def _update(
    conn: Connection, row: Row[Any], event: CallCompleted, policy: MergePolicy, now: datetime
) -> Outcome:
    state = _state_of(row)
    result = merge(state, event, policy)
    new = result.state
    changed = {
        name: getattr(new, name)
        for name in STATE_FIELDS
        if getattr(new, name) != getattr(row, name)
    }
    version = row.version
    if changed:
        version = row.version + 1
        written = conn.execute(
            update(contacts)
            .where(contacts.c.id == row.id, contacts.c.version == row.version)
            .values(**changed, provenance=new.provenance, version=version, updated_at=now)
        ).rowcount
        if written != 1:  # the row lock makes this unreachable; the CAS stays as a guard
            raise RuntimeError(f"contact {row.id} changed under its row lock")
    elif new.provenance != row.provenance:
        # A newer observation of the same value: remember it, no version bump.
        conn.execute(
            update(contacts).where(contacts.c.id == row.id).values(provenance=new.provenance)
        )
    conn.execute(
        insert(contact_history).values(
            _history(
                contact_id=row.id,
                event=event,
                result=result,
                before=row.version,
                after=version,
                now=now,
            )
        )
    )
    name: OutcomeName = "applied" if changed else "no_change"
    return Outcome(name, event.event_id, row.team_id, row.id, version=version)


@dataclass(frozen=True)
class _Policy:
    min_confidence: float

    def for_team(self, team: Team) -> MergePolicy:
        return MergePolicy(
            region=team.default_region,
            min_confidence=team.min_confidence
            if team.min_confidence is not None
            else self.min_confidence,
            calls_overwrite_people=team.calls_overwrite_people,
        )


def _dead_letter(
    conn: Connection,
    payload: Any,
    reason: Reason,
    message: str,
    now: datetime,
    dead_letter_id: str | None,
) -> Outcome:
    event_id = event_id_of(payload)
    team_id = team_id_of(payload)
    dead_letters.record(
        conn,
        payload=payload,
        reason=reason,
        message=message,
        event_id=event_id,
        team_id=team_id,
        now=now,
        dead_letter_id=dead_letter_id,
    )
    if event_id is not None:
        values = {
            "event_id": event_id,
            "team_id": team_id,
            "contact_id": None,
            "outcome": "dead_lettered",
            "processed_at": now,
        }
        stmt: Any = (
            pg_insert(processed_events)
            if conn.dialect.name == "postgresql"
            else sqlite_insert(processed_events)
        ).values(values)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=[processed_events.c.event_id]))
    return Outcome("dead_lettered", event_id, team_id, reason=reason, message=message)


# The one place that maps domain errors to dead-letter reasons.
_REASONS: dict[type[Exception], Reason] = {
    ContactNotFound: "contact_not_found",
    AmbiguousContact: "ambiguous_contact",
}


def _sort_key(payload: Any) -> tuple[str, str, str]:
    # Lock contacts in one order across concurrent batches to avoid deadlocks;
    # the merge is order-independent, so reordering a batch changes nothing.
    if isinstance(payload, dict):
        return (
            str(payload.get("team_id", "")),
            str(payload.get("contact_id") or payload.get("phone") or ""),
            str(payload.get("event_id", "")),
        )
    return ("", "", "")


def apply_payloads(
    conn: Connection,
    payloads: Sequence[Any],
    *,
    min_confidence: float = 0.5,
    now: datetime | None = None,
    dead_letter_id: str | None = None,
) -> list[Outcome]:
    """Apply payloads as received, in the caller's transaction; one outcome each (input order).

    Permanent problems become dead letters; transient database errors
    propagate so the caller retries the whole transaction.
    """
    now = now or utcnow()
    teams: dict[str, Team] = {}
    policy = _Policy(min_confidence)
    outcomes: dict[int, Outcome] = {}
    order = sorted(range(len(payloads)), key=lambda i: _sort_key(payloads[i]))
    for index in order:
        payload = payloads[index]
        try:
            event = parse_event(payload, now=now)
            with conn.begin_nested():
                outcomes[index] = _apply_valid(conn, event, teams, policy, now)
        except InvalidEvent as exc:
            outcomes[index] = _dead_letter(
                conn, payload, exc.reason, exc.message, now, dead_letter_id
            )
        except (ContactNotFound, AmbiguousContact) as exc:
            outcomes[index] = _dead_letter(
                conn, payload, _REASONS[type(exc)], str(exc), now, dead_letter_id
            )
    return [outcomes[i] for i in range(len(payloads))]


def apply_batch(
    engine: Engine,
    payloads: Sequence[Any],
    *,
    min_confidence: float = 0.5,
    now: datetime | None = None,
) -> list[Outcome]:
    """Apply payloads in one new transaction, committed before returning."""
    with engine.begin() as conn:
        return apply_payloads(conn, payloads, min_confidence=min_confidence, now=now)


def count_processed(conn: Connection) -> int:
    """How many events the inbox holds (for ops and tests)."""
    return int(conn.execute(select(func.count()).select_from(processed_events)).scalar_one())
