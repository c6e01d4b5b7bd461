"""The apply use case: claim events, resolve their contacts, merge, store (DESIGN §3–§5).

A batch is applied with a fixed number of set-based statements, whatever
its size: one inbox claim, one lookup per kind of resolution, a look at
the suppression list for new contacts' numbers, one insert of new
contacts, one versioned update of changed contacts, one insert of history
records. Each event keeps every guarantee it has alone: its own
idempotency (the inbox), its own dead letter, its own history record, and a
version bump of exactly one when it changed something. Events are keyed by
``(team_id, event_id)``: two teams' events with one id are two events.

Concurrency: the inbox claim comes first, so a second delivery of an event
waits for the first transaction and then finds it applied; contacts are
locked (``FOR NO KEY UPDATE``) in id order for the rest of this short
transaction, so no update is lost; the ``version`` compare-and-set stays as
a guard. SQLite serialises writers itself (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Connection, Row, bindparam, func, insert, select, update

from contact_sync import dead_letters, inbox, suppression
from contact_sync.clock import utcnow
from contact_sync.contacts import ContactPatch
from contact_sync.db.tables import contact_history, contacts, processed_events, teams
from contact_sync.errors import AmbiguousContact, ContactNotFound
from contact_sync.events import (
    CallCompleted,
    InvalidEvent,
    Reason,
    event_id_of,
    parse_event,
    team_id_of,
)
from contact_sync.ids import new_id
from contact_sync.inbox import EventKey, key_of
from contact_sync.merge import ContactState, MergePolicy, MergeResult, merge, observation
from contact_sync.resolve import NewContact, resolve
from contact_sync.suppression import SUPPRESSED
from contact_sync.teams import Team

OutcomeName = Literal["applied", "no_change", "duplicate", "dead_lettered"]
PLACEHOLDER_NAME = "Unknown"
STATE_FIELDS = tuple(f.name for f in fields(ContactState) if f.name != "provenance")

# The one place that maps domain errors to dead-letter reasons.
_REASONS: dict[type[Exception], Reason] = {
    ContactNotFound: "contact_not_found",
    AmbiguousContact: "ambiguous_contact",
}


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


@dataclass
class _Contact:
    """One contact's merge in progress: its state, version and new history records."""

    id: str
    team_id: str
    state: ContactState
    version: int
    row: Row[Any] | None  # None for a contact this batch creates
    phone: str | None = None
    suppressed: bool = False  # a new contact whose number is on the suppression list
    history: list[dict[str, Any]] = field(default_factory=list)


def _state_of(row: Row[Any]) -> ContactState:
    values = {name: getattr(row, name) for name in STATE_FIELDS}
    return ContactState(
        **{**values, "custom_fields": dict(row.custom_fields), "tags": list(row.tags)},
        provenance=dict(row.provenance),
    )


def _placeholder_name(event: CallCompleted, name: str) -> str:
    extracted = event.extraction.contact if event.extraction else None
    raw = getattr(extracted, name, None) if extracted else None
    if raw is None:
        return PLACEHOLDER_NAME
    try:
        value = getattr(ContactPatch.model_validate({name: raw}), name)
    except ValidationError:
        return PLACEHOLDER_NAME
    return value if isinstance(value, str) else PLACEHOLDER_NAME


def _history(
    target: _Contact, event: CallCompleted, result: MergeResult, before: int | None, now: datetime
) -> dict[str, Any]:
    extraction = event.extraction
    return {
        "id": new_id(),
        "contact_id": target.id,
        "team_id": event.team_id,
        "version_before": before,
        "version_after": target.version,
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


def _created(target: _Contact, result: MergeResult) -> MergeResult:
    """The creating event's record lists every value the new contact holds.

    A do-not-call that comes from the suppression list says so: the reason
    is the number's earlier erased contact, not this call.
    """
    state = result.state
    values = {name: getattr(state, name) for name in STATE_FIELDS if name != "custom_fields"}
    values.update(phone=target.phone, source="inbound-call")
    changes = [
        {"field": name, "old": None, "new": value}
        | ({"reason": SUPPRESSED} if name == "do_not_call" and target.suppressed else {})
        for name, value in values.items()
        if value not in (None, False, [])
    ] + [
        {"field": f"custom_fields.{key}", "old": None, "new": value}
        for key, value in state.custom_fields.items()
    ]
    return MergeResult(state, changes, result.skipped)


def _merge_all(
    target: _Contact, events: list[CallCompleted], policy: MergePolicy, now: datetime
) -> list[tuple[CallCompleted, OutcomeName, int]]:
    """Merge a contact's events one by one (time order: the history reads naturally).

    Returns each event's outcome and the version it left.
    """
    done: list[tuple[CallCompleted, OutcomeName, int]] = []
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        creating = target.row is None and target.version == 0
        result = merge(target.state, event, policy)
        if creating:
            result = _created(target, result)
        before = None if creating else target.version
        if result.changes or creating:
            target.version += 1
        target.state = result.state
        target.history.append(_history(target, event, result, before, now))
        done.append(
            (event, "applied" if result.changes or creating else "no_change", target.version)
        )
    return done


def _new_contact_row(target: _Contact, now: datetime) -> dict[str, Any]:
    return {
        **{name: getattr(target.state, name) for name in STATE_FIELDS},
        "id": target.id,
        "team_id": target.team_id,
        "company_id": None,
        "phone": target.phone,
        "source": "inbound-call",
        "provenance": target.state.provenance,
        "version": target.version,
        "created_at": now,
        "updated_at": now,
    }


def _write(conn: Connection, targets: list[_Contact], now: datetime) -> None:
    """Store the batch's contacts and history: a fixed number of statements."""
    created = [_new_contact_row(t, now) for t in targets if t.row is None]
    if created:
        conn.execute(insert(contacts), created)
    updates = []
    for target in targets:
        row = target.row
        if row is None:
            continue
        changed = target.version != row.version
        if not changed and target.state.provenance == row.provenance:
            continue  # nothing new, not even a newer observation of a value
        updates.append(
            {
                **{f"b_{name}": getattr(target.state, name) for name in STATE_FIELDS},
                "b_provenance": target.state.provenance,
                "b_id": target.id,
                "b_read": row.version,
                "b_version": target.version,
                "b_updated_at": now if changed else row.updated_at,
            }
        )
    if updates:
        written = conn.execute(
            update(contacts)
            .where(contacts.c.id == bindparam("b_id"), contacts.c.version == bindparam("b_read"))
            .values(
                {
                    **{name: bindparam(f"b_{name}") for name in (*STATE_FIELDS, "provenance")},
                    "version": bindparam("b_version"),
                    "updated_at": bindparam("b_updated_at"),
                }
            ),
            updates,
        ).rowcount
        if written not in (len(updates), -1):  # the row locks make this unreachable
            raise RuntimeError("a locked contact changed under its lock")
    records = [record for target in targets for record in target.history]
    if records:
        conn.execute(insert(contact_history), records)


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


def _load_teams(conn: Connection, team_ids: set[str]) -> dict[str, Team]:
    if not team_ids:
        return {}
    rows = conn.execute(select(teams).where(teams.c.id.in_(sorted(team_ids))))
    return {
        r.id: Team(r.id, r.name, r.default_region, r.calls_overwrite_people, r.min_confidence)
        for r in rows
    }


def _dead_letter(
    conn: Connection,
    payload: Any,
    reason: Reason,
    message: str,
    now: datetime,
    dead_letter_id: str | None,
) -> Outcome:
    event_id, team_id = event_id_of(payload), team_id_of(payload)
    dead_letters.park(
        conn,
        payloads=[payload],
        reason=reason,
        message=message,
        now=now,
        dead_letter_id=dead_letter_id,
    )
    if event_id is not None:
        inbox.mark_dead_lettered(conn, event_id=event_id, team_id=team_id, now=now)
    return Outcome("dead_lettered", event_id, team_id, reason=reason, message=message)


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
    outcomes: list[Outcome | None] = [None] * len(payloads)
    first: dict[EventKey, int] = {}
    events: dict[int, CallCompleted] = {}
    for index, payload in enumerate(payloads):
        try:
            event = parse_event(payload, now=now)
        except InvalidEvent as exc:
            outcomes[index] = _dead_letter(
                conn, payload, exc.reason, exc.message, now, dead_letter_id
            )
            continue
        if key_of(event) in first:  # delivered twice in one batch
            outcomes[index] = Outcome("duplicate", event.event_id, event.team_id)
        else:
            first[key_of(event)] = index
            events[index] = event

    known_teams = _load_teams(conn, {e.team_id for e in events.values()})
    for index, event in list(events.items()):
        if event.team_id not in known_teams:
            del events[index]
            outcomes[index] = _dead_letter(
                conn,
                payloads[index],
                "contact_not_found",
                f"no team {event.team_id}",
                now,
                dead_letter_id,
            )

    claimed = inbox.claim(conn, list(events.values()), now)
    for index, event in list(events.items()):
        if key_of(event) not in claimed:
            del events[index]
            outcomes[index] = Outcome("duplicate", event.event_id, event.team_id)

    resolutions = resolve(conn, list(events.values()), known_teams)
    new_numbers = {(f.team_id, f.phone) for f in resolutions.values() if isinstance(f, NewContact)}
    suppressed = suppression.suppressed_numbers(conn, new_numbers) if new_numbers else set()
    targets: dict[Any, _Contact] = {}
    grouped: dict[Any, list[CallCompleted]] = {}
    for index, event in events.items():
        found = resolutions[key_of(event)]
        if isinstance(found, InvalidEvent | ContactNotFound | AmbiguousContact):
            reason = found.reason if isinstance(found, InvalidEvent) else _REASONS[type(found)]
            outcomes[index] = _dead_letter(
                conn, payloads[index], reason, str(found), now, dead_letter_id
            )
            continue
        if isinstance(found, NewContact):
            key: Any = found
            if key not in targets:
                # Placeholder names carry no provenance, so any call may fill them.
                provenance = {"phone": observation(event), "source": observation(event)}
                blocked = (found.team_id, found.phone) in suppressed
                if blocked:
                    # Not a call's observation: no call's do_not_call may replace it.
                    provenance["do_not_call"] = {
                        "source": "suppression",
                        "observed_at": now.isoformat(),
                    }
                start = ContactState(
                    first_name=_placeholder_name(event, "first_name"),
                    last_name=_placeholder_name(event, "last_name"),
                    do_not_call=blocked,
                    provenance=provenance,
                )
                targets[key] = _Contact(
                    new_id(), found.team_id, start, 0, None, found.phone, suppressed=blocked
                )
        else:
            key = found.id
            if key not in targets:
                targets[key] = _Contact(
                    found.id, found.team_id, _state_of(found), found.version, found
                )
        grouped.setdefault(key, []).append(event)

    applied: list[tuple[EventKey, str | None, str]] = []
    for key, target in targets.items():
        policy = _Policy(min_confidence).for_team(known_teams[target.team_id])
        for event, name, version in _merge_all(target, grouped[key], policy, now):
            outcomes[first[key_of(event)]] = Outcome(
                name, event.event_id, event.team_id, target.id, version=version
            )
            applied.append((key_of(event), target.id, name))
    _write(conn, list(targets.values()), now)
    inbox.record_outcomes(conn, applied)
    return [o for o in outcomes if o is not None]


def count_processed(conn: Connection) -> int:
    """How many events the inbox holds (for ops and tests)."""
    return int(conn.execute(select(func.count()).select_from(processed_events)).scalar_one())
