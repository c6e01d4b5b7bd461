"""The apply use case: claim events, resolve their contacts, merge, store (docs/design.md §3–§5).

A batch is applied with a fixed number of set-based statements, whatever
its size: one inbox claim, one lookup per kind of resolution, a look at
the suppression list for new contacts' numbers, one insert of new
contacts, one versioned update of changed contacts, one insert of history
records, and the calls ledger's read and upsert and a read of the
touched contacts' call fields, which ride on their versioned update
(docs/design.md §11). Each event keeps every guarantee it has alone: its own
idempotency (the inbox), its own dead letter, its own history record, and a
version bump of exactly one when it changed something. Events are keyed by
``(team_id, event_id)``: two teams' events with one id are two events.

``apply_payloads`` runs in phases, each a function below: parse, admit
teams, find the contacts, claim in the inbox, resolve, merge, write (through
``contact_sync.contacts.writer``; then the calls ledger through
``contact_sync.calls.ledger_store``). Each phase settles the events it is the
last to see (parked, duplicate, applied) and hands the rest on. The caller
owns the transaction: the worker's task, a replay, or a test.

Concurrency: contacts are locked (``FOR NO KEY UPDATE``) in id order, before
the inbox claim, for the rest of this short transaction, so no update is
lost; the ``version`` compare-and-set stays as a guard. A second delivery of
an event meets the first's transaction at its contact, then claims and
finds it applied. ``apply_free_payloads`` (the worker's first pass) waits for
no contact or number another transaction holds: it defers those events, for
the caller to apply after its commit (docs/design.md §5). SQLite serialises
writers itself (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Row, bindparam, func, select

from contact_sync.accounts.teams import Team, team_from_row
from contact_sync.calls import inbox, ledger_store
from contact_sync.calls.events import (
    CallCompleted,
    EventOutcome,
    InvalidEvent,
    Reason,
    call_id_of,
    event_id_of,
    parse_event,
    team_id_of,
)
from contact_sync.calls.inbox import EventKey, key_of
from contact_sync.calls.ledger import CallRecord, call_phone, record_of
from contact_sync.calls.merge import ContactState, MergePolicy, MergeResult, merge, observation
from contact_sync.calls.resolve import Busy, NewContact, Resolution, resolve
from contact_sync.clock import utcnow
from contact_sync.contacts import suppression
from contact_sync.contacts import writer as contact_writer
from contact_sync.contacts.model import ContactPatch
from contact_sync.contacts.records import Change, Observation, Provenance, provenance_from_json
from contact_sync.contacts.suppression import SUPPRESSED
from contact_sync.contacts.writer import ContactInsert, ContactUpdate, HistoryRecord
from contact_sync.db.bulk import is_postgresql
from contact_sync.db.tables import processed_events, teams
from contact_sync.errors import AmbiguousContact, ContactNotFound
from contact_sync.fields.definitions import FieldDefinition
from contact_sync.fields.store import definitions_by_team
from contact_sync.ids import new_id
from contact_sync.ops import dead_letters

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

    outcome: EventOutcome
    event_id: str | None
    team_id: str | None
    contact_id: str | None = None
    reason: Reason | None = None
    message: str | None = None
    version: int | None = None
    call_id: str | None = None  # for logs: the call pipeline's id of the event


@dataclass
class _Contact:
    """One contact's merge in progress: its state, version, events and new history records."""

    id: str
    team_id: str
    state: ContactState
    version: int
    row: Row[Any] | None  # None for a contact this batch creates
    phone: str | None = None
    suppressed: bool = False  # a new contact whose number is on the suppression list
    events: list[CallCompleted] = field(default_factory=list)
    history: list[HistoryRecord] = field(default_factory=list)


def _stored(row: Row[Any]) -> _Contact:
    values = {name: getattr(row, name) for name in STATE_FIELDS}
    state = ContactState(
        **{**values, "custom_fields": dict(row.custom_fields), "tags": list(row.tags)},
        provenance=provenance_from_json(row.provenance),
    )
    return _Contact(row.id, row.team_id, state, row.version, row)


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


def _created_by(event: CallCompleted, found: NewContact, blocked: bool, now: datetime) -> _Contact:
    """A contact the event creates, named by its extraction where it can be."""
    seen = observation(event)
    # Placeholder names carry no provenance, so any call may fill them.
    provenance = Provenance({"phone": seen, "source": seen})
    if blocked:
        # Not a call's observation: no call's do_not_call may replace it.
        provenance["do_not_call"] = Observation("suppression", now.isoformat())
    start = ContactState(
        first_name=_placeholder_name(event, "first_name"),
        last_name=_placeholder_name(event, "last_name"),
        do_not_call=blocked,
        provenance=provenance,
    )
    return _Contact(new_id(), found.team_id, start, 0, None, phone=found.phone, suppressed=blocked)


def _history(
    target: _Contact, event: CallCompleted, result: MergeResult, before: int | None, now: datetime
) -> HistoryRecord:
    extraction = event.extraction
    return HistoryRecord(
        contact_id=target.id,
        team_id=event.team_id,
        version_before=before,
        version_after=target.version,
        source="call",
        occurred_at=event.occurred_at,
        recorded_at=now,
        changes=result.changes,
        skipped=result.skipped,
        event_id=event.event_id,
        call_id=event.call_id,
        summary=extraction.summary if extraction else None,
    )


def _created(target: _Contact, result: MergeResult) -> MergeResult:
    """The creating event's record lists every value the new contact holds.

    A do-not-call that comes from the suppression list says so: the reason
    is the number's earlier erased contact, not this call.
    """
    state = result.state
    values = {name: getattr(state, name) for name in STATE_FIELDS if name != "custom_fields"}
    values.update(phone=target.phone, source="inbound-call")
    reason = {"do_not_call": SUPPRESSED} if target.suppressed else {}
    raws = {change.field: change.raw for change in result.changes}  # a coerced value's input
    changes = [
        Change(name, None, value, reason.get(name))
        for name, value in values.items()
        if value not in (None, False, [])
    ] + [
        Change(f"custom_fields.{key}", None, value, raw=raws.get(f"custom_fields.{key}"))
        for key, value in state.custom_fields.items()
    ]
    return MergeResult(state, changes, result.skipped)


def _merge_all(
    target: _Contact, policy: MergePolicy, now: datetime
) -> list[tuple[CallCompleted, EventOutcome, int]]:
    """Merge a contact's events one by one (time order: the history reads naturally).

    Returns each event's outcome and the version it left.
    """
    done: list[tuple[CallCompleted, EventOutcome, int]] = []
    for event in sorted(target.events, key=lambda e: (e.occurred_at, e.event_id)):
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


def _insert(target: _Contact, now: datetime) -> ContactInsert:
    values = {
        **{name: getattr(target.state, name) for name in STATE_FIELDS},
        "id": target.id,
        "team_id": target.team_id,
        "company_id": None,
        "phone": target.phone,
        "source": "inbound-call",
        "version": target.version,
        "created_at": now,
        "updated_at": now,
    }
    return ContactInsert(values, target.state.provenance)


def _update(
    target: _Contact, row: Row[Any], now: datetime, calls: dict[str, dict[str, Any]]
) -> ContactUpdate | None:
    """The contact's next version, with its call fields from ``calls`` (taken from it)."""
    changed = target.version != row.version
    if not changed and not target.state.provenance.changed():
        return None  # nothing new, not even a newer observation of a value
    call_fields = calls.pop(target.id, {})
    if _holds(row, call_fields):
        call_fields = {}  # all four or none: one statement for the batch's updates
    return ContactUpdate(
        contact_id=target.id,
        read_version=row.version,
        version=target.version,
        values={
            **{name: getattr(target.state, name) for name in STATE_FIELDS},
            **call_fields,
        },
        provenance=target.state.provenance,
        updated_at=now if changed else row.updated_at,
        team_id=row.team_id,
        custom_fields_before=row.custom_fields,
    )


def _holds(row: Row[Any], values: dict[str, Any]) -> bool:
    """Whether the stored ``row`` already holds ``values``."""
    return all(getattr(row, name) == value for name, value in values.items())


def _write(
    conn: Connection, targets: list[_Contact], known: dict[str, Team], now: datetime
) -> None:
    """Store the batch's contacts, calls and history: a fixed number of statements.

    The calls go to the ledger before the contacts' next versions are written,
    so that a contact's call fields ride on its one update: a second update of
    the same rows wrote each contact's whole row (2-3 KB, ten indexes) again.
    """
    contact_writer.insert_contacts(conn, [_insert(t, now) for t in targets if t.row is None])
    touched = ledger_store.write_calls(conn, _calls(targets, known), now)
    calls = contact_writer.call_fields(conn, touched)
    updates = [_update(t, t.row, now, calls) for t in targets if t.row is not None]
    contact_writer.update_contacts(conn, [u for u in updates if u is not None])
    # What is left: new contacts, unchanged ones and those a re-analysed call left.
    for target in targets:
        if target.row is not None and _holds(target.row, calls.get(target.id, {})):
            calls.pop(target.id, None)
    contact_writer.write_call_fields(conn, calls)
    contact_writer.record_history(conn, [record for t in targets for record in t.history])


def _calls(targets: list[_Contact], known: dict[str, Team]) -> list[CallRecord]:
    """The ledger row of every applied event, changed a field or not (docs/design.md §11)."""
    records = []
    for target in targets:
        primary = target.row.phone if target.row is not None else target.phone
        region = known[target.team_id].default_region
        for event in target.events:
            records.append(record_of(event, target.id, call_phone(event, region, primary)))
    return records


@dataclass(frozen=True)
class _Policy:
    min_confidence: float
    definitions: dict[str, dict[str, FieldDefinition]]  # by team, loaded once per batch

    def for_team(self, team: Team) -> MergePolicy:
        return MergePolicy(
            region=team.default_region,
            min_confidence=team.min_confidence
            if team.min_confidence is not None
            else self.min_confidence,
            calls_overwrite_people=team.calls_overwrite_people,
            definitions=self.definitions.get(team.id, {}),
            reject_undefined=team.undefined_custom_fields == "reject",
        )


def _definitions(
    conn: Connection, targets: list[_Contact]
) -> dict[str, dict[str, FieldDefinition]]:
    """The custom-field definitions of the teams whose events carry custom fields: one query
    for the batch, none when no event extracted a custom field."""
    team_ids = {
        event.team_id
        for target in targets
        for event in target.events
        if event.extraction is not None and event.extraction.custom_fields
    }
    return definitions_by_team(conn, team_ids) if team_ids else {}


def _load_teams(conn: Connection, team_ids: set[str]) -> dict[str, Team]:
    if not team_ids:
        return {}
    rows = conn.execute(_TEAMS, {"ids": sorted(team_ids)})
    return {r.id: team_from_row(r) for r in rows}


# Built once: the batch's statements are (db/bulk.rows_source says why).
_TEAMS = select(teams).where(teams.c.id.in_(bindparam("ids", expanding=True)))


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
    return Outcome(
        "dead_lettered",
        event_id,
        team_id,
        reason=reason,
        message=message,
        call_id=call_id_of(payload),
    )


def _duplicate(event: CallCompleted) -> Outcome:
    return Outcome("duplicate", event.event_id, event.team_id, call_id=event.call_id)


@dataclass
class _Batch:
    """One apply in progress: each payload's outcome once known, and the events still in play.

    ``events`` maps a payload's index to its event until the event has an
    outcome; ``first`` maps each key to the index of its first delivery.
    """

    conn: Connection
    payloads: Sequence[Any]
    now: datetime
    dead_letter_id: str | None
    skip_busy: bool = False
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    events: dict[int, CallCompleted] = field(default_factory=dict)
    first: dict[EventKey, int] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)

    def settle(self, index: int, outcome: Outcome) -> None:
        self.events.pop(index, None)
        self.outcomes[index] = outcome

    def defer(self, index: int) -> None:
        """Leave the event for after this transaction: another one holds what it needs."""
        self.events.pop(index)
        self.deferred.append(index)

    def park(self, index: int, reason: Reason, message: str) -> None:
        payload = self.payloads[index]
        self.settle(
            index, _dead_letter(self.conn, payload, reason, message, self.now, self.dead_letter_id)
        )

    def duplicate(self, index: int, event: CallCompleted) -> None:
        self.settle(index, _duplicate(event))


def _parse(batch: _Batch) -> None:
    """Phase 1: payloads become events; the invalid are parked, a second delivery is a duplicate."""
    for index, payload in enumerate(batch.payloads):
        try:
            event = parse_event(payload, now=batch.now)
        except InvalidEvent as exc:
            batch.park(index, exc.reason, exc.message)
            continue
        if key_of(event) in batch.first:  # delivered twice in one batch
            batch.duplicate(index, event)
        else:
            batch.first[key_of(event)] = index
            batch.events[index] = event


def _admit_teams(batch: _Batch) -> dict[str, Team]:
    """Phase 2: the events' teams; an event of no team is parked."""
    known = _load_teams(batch.conn, {e.team_id for e in batch.events.values()})
    for index, event in list(batch.events.items()):
        if event.team_id not in known:
            batch.park(index, "contact_not_found", f"no team {event.team_id}")
    return known


def _claim(batch: _Batch) -> None:
    """Phase 4: claim the events in the inbox; one applied before is a duplicate."""
    claimed = inbox.claim(batch.conn, list(batch.events.values()), batch.now)
    for index, event in list(batch.events.items()):
        if key_of(event) not in claimed:
            batch.duplicate(index, event)


def _find(batch: _Batch, known: dict[str, Team]) -> dict[EventKey, Resolution]:
    """Phase 3: find (and lock) each event's contact; skipping what is busy, defer those
    whose contact or number another transaction holds.

    Before the claim, so that a deferred event leaves no claim behind (its second
    pass would take it for a duplicate), and so that a second delivery of an
    event another transaction is applying meets that transaction at the contact
    (busy: deferred; or waited for), never at the claim while holding contacts:
    claims then wait only on claims, taken in one order, and no wait is a cycle.
    """
    events = list(batch.events.values())
    resolutions = resolve(batch.conn, events, known, skip_busy=batch.skip_busy)
    for index, event in list(batch.events.items()):
        if isinstance(resolutions[key_of(event)], Busy):
            batch.defer(index)
    return resolutions


def _resolve(
    batch: _Batch, known: dict[str, Team], resolutions: dict[EventKey, Resolution]
) -> list[_Contact]:
    """Phase 5: each claimed event's contact, found or to create; an event without one is
    parked."""
    numbers = {(f.team_id, f.phone) for f in resolutions.values() if isinstance(f, NewContact)}
    suppressed = suppression.suppressed_numbers(batch.conn, numbers) if numbers else set()
    targets: dict[str | NewContact, _Contact] = {}
    for index, event in list(batch.events.items()):
        found = resolutions[key_of(event)]
        assert not isinstance(found, Busy)  # deferred by _find
        if isinstance(found, InvalidEvent | ContactNotFound | AmbiguousContact):
            reason = found.reason if isinstance(found, InvalidEvent) else _REASONS[type(found)]
            batch.park(index, reason, str(found))
        elif isinstance(found, NewContact):
            if found not in targets:
                blocked = (found.team_id, found.phone) in suppressed
                targets[found] = _created_by(event, found, blocked, batch.now)
            targets[found].events.append(event)
        else:
            if found.id not in targets:
                targets[found.id] = _stored(found)
            targets[found.id].events.append(event)
    return list(targets.values())


def _merge(
    batch: _Batch, targets: list[_Contact], known: dict[str, Team], min_confidence: float
) -> list[tuple[EventKey, str | None, str]]:
    """Phase 6: merge each contact's events in time order; the inbox outcome of each."""
    applied: list[tuple[EventKey, str | None, str]] = []
    policies = _Policy(min_confidence, _definitions(batch.conn, targets))
    for target in targets:
        policy = policies.for_team(known[target.team_id])
        for event, name, version in _merge_all(target, policy, batch.now):
            outcome = Outcome(
                name,
                event.event_id,
                event.team_id,
                target.id,
                version=version,
                call_id=event.call_id,
            )
            batch.settle(batch.first[key_of(event)], outcome)
            applied.append((key_of(event), target.id, name))
    return applied


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
    batch = _Batch(conn, payloads, now or utcnow(), dead_letter_id)
    _apply(batch, min_confidence)
    return [batch.outcomes[index] for index in sorted(batch.outcomes)]


def apply_free_payloads(
    conn: Connection,
    payloads: Sequence[Any],
    *,
    min_confidence: float = 0.5,
    now: datetime | None = None,
) -> tuple[dict[int, Outcome], list[int]]:
    """``apply_payloads`` that waits for no other transaction (docs/design.md §5).

    An event whose inbox key, contact or number another transaction holds is
    not applied: its index is returned among the deferred, for the caller to
    apply (``apply_payloads``) once this transaction committed. The outcomes
    of the others are returned by index. On SQLite, which has one writer at a
    time, nothing is deferred.
    """
    batch = _Batch(conn, payloads, now or utcnow(), None, skip_busy=is_postgresql(conn))
    _apply(batch, min_confidence)
    return batch.outcomes, sorted(batch.deferred)


def _apply(batch: _Batch, min_confidence: float) -> None:
    """The phases, in order."""
    _parse(batch)
    known = _admit_teams(batch)
    resolutions = _find(batch, known)
    _claim(batch)
    targets = _resolve(batch, known, resolutions)
    applied = _merge(batch, targets, known, min_confidence)
    _write(batch.conn, targets, known, batch.now)  # phase 7, the calls ledger with it
    inbox.record_outcomes(batch.conn, applied)


def count_processed(conn: Connection) -> int:
    """How many events the inbox holds (for ops and tests)."""
    return int(conn.execute(select(func.count()).select_from(processed_events)).scalar_one())
