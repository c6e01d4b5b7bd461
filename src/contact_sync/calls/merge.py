"""The pure merge of a ``call.completed`` event into a contact (docs/design.md §4).

No I/O: a function of (state with provenance, event, policy) that returns the
new state, the changes and the skipped values. Every rule is written so the
result does not depend on delivery order: a field keeps the value of its
newest observation (``occurred_at``, then ``event_id``), and the rules that
ignore time (do-not-call, sticky statuses, tag union, the implicit
``contacted``) are monotone and remember the earliest call that set them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from contact_sync.calls.events import CallCompleted, ExtractedContact, ExtractedValue
from contact_sync.contacts.lead_status import (
    IMPLICIT_FROM,
    IMPLICIT_TO,
    SETTABLE_BY_CALLS,
    is_sticky,
)
from contact_sync.contacts.model import MAX_TAGS, ContactPatch, field_errors, normalise_lead_status
from contact_sync.contacts.records import Change, Observation, Provenance, Skip
from contact_sync.fields.coerce import InvalidValue, coerce
from contact_sync.fields.definitions import FieldDefinition

PEOPLE = frozenset({"api", "import"})
CALL_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone_secondary",
    "job_title",
    "timezone",
    "preferred_contact_method",
)
TAG_PREFIX = "tag:"


@dataclass(frozen=True)
class MergePolicy:
    """A team's settings that the merge obeys."""

    region: str = "US"
    min_confidence: float = 0.5
    calls_overwrite_people: bool = False
    # The team's custom-field definitions (docs/design.md §13), loaded once per batch.
    definitions: Mapping[str, FieldDefinition] = field(default_factory=dict)
    reject_undefined: bool = False  # the team's ``undefined_custom_fields`` is ``reject``


@dataclass
class ContactState:
    """The mergeable part of a contact and the provenance of each value.

    ``provenance`` maps a field (``email``, ``custom_fields.budget``,
    ``tag:hot-lead``) to the observation of its current value; a plain
    mapping given is wrapped (stored JSON is read with ``provenance_from_json``).
    """

    first_name: str
    last_name: str
    email: str | None = None
    phone_secondary: str | None = None
    job_title: str | None = None
    timezone: str | None = None
    preferred_contact_method: str | None = None
    lead_status: str = "new"
    do_not_call: bool = False
    custom_fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, Provenance):
            self.provenance = Provenance(self.provenance)

    def copy(self) -> ContactState:
        """A copy with new containers, so the merge never mutates its input.

        The merge replaces values and observations but never changes one
        in place, so they may be shared (a deep copy was a quarter of
        the cost of applying a batch).
        """
        # Not ``dataclasses.replace``, which calls ``__init__`` with every field by name:
        # a merge copies its contact once per event.
        twin = object.__new__(ContactState)
        twin.__dict__.update(self.__dict__)
        twin.custom_fields = dict(self.custom_fields)
        twin.tags = list(self.tags)
        twin.provenance = self.provenance.copy()
        return twin


@dataclass(frozen=True)
class MergeResult:
    """What a merge produced: the state, the changes and what it declined."""

    state: ContactState
    changes: list[Change]
    skipped: list[Skip]


def _key(observed_at: str, event_id: str | None) -> tuple[str, str]:
    return (observed_at, event_id or "")


def _utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@lru_cache(maxsize=65536)
def _normalise_iso(value: str) -> str:
    # Recorded times are compared as text: normalise any stored form to the
    # fixed-width UTC form the merge writes. Cached: the same few times recur.
    return _utc_iso(datetime.fromisoformat(value))


def observation(event: CallCompleted) -> Observation:
    """The observation a value from this event gets."""
    return Observation("call", _utc_iso(event.occurred_at), event.event_id, event.call_id)


@lru_cache(maxsize=4096)
def _checked_field(name: str, raw: Any, region: str) -> tuple[Any, str | None]:
    """A standard field's value as people's writes validate it, or why it is invalid.

    Cached: validation is a pure function of the name, the text and the team's
    region, and a call's values (a job title, a time zone, an email) recur.
    """
    try:
        patch = ContactPatch.model_validate({name: raw}, context={"region": region})
    except ValidationError as exc:
        return None, field_errors(exc).get(name, "invalid value")
    return getattr(patch, name), None


class _Merge:
    """One merge in progress: collects changes and skips as it goes."""

    def __init__(self, state: ContactState, event: CallCompleted, policy: MergePolicy) -> None:
        self.state = state.copy()
        self.event = event
        self.policy = policy
        self.changes: list[Change] = []
        self.skipped: list[Skip] = []
        self.seen = observation(event)
        # This event's place in time (``newer``): computed once, not per field.
        self.mine = _key(self.seen.observed_at, event.event_id)

    def newer(self, current: Observation | None) -> bool:
        """Whether this event's observation beats the recorded one (ties: larger event_id)."""
        if current is None:
            return True
        return self.mine > _key(_normalise_iso(current.observed_at), current.event_id)

    def skip(self, name: str, value: Any, reason: str) -> None:
        self.skipped.append(Skip(name, value, reason))

    def set(self, name: str, value: Any, seen: Observation) -> None:
        old = getattr(self.state, name)
        if old != value:
            setattr(self.state, name, value)
            self.changes.append(Change(name, old, value))
        self.state.provenance[name] = seen

    def refusal(self, name: str, *, has_value: bool) -> str | None:
        """Why this call may not replace the value of ``name``, or None when it may.

        People's values (``api``, ``import``) win over calls unless the team
        opts in; otherwise the newest observation wins (docs/design.md §4.1, §4.2).
        """
        current = self.state.provenance.get(name)
        if (
            has_value
            and current is not None
            and current.source in PEOPLE
            and not self.policy.calls_overwrite_people
        ):
            return "set_by_person"
        if not self.newer(current):
            return "older_than_current"
        return None

    def keep_earliest(self, name: str, entry: Observation) -> None:
        """Record this call as the observation of a value that only ever gets set once.

        Do-not-call, a call's tag, a call's ``do_not_contact`` and the implicit
        ``contacted`` are set by the first call that says so and never undone
        by one. In time order that first call is the earliest, so whatever the
        delivery order the earliest call is the one remembered; a person's
        observation is never replaced.
        """
        current = self.state.provenance.get(name)
        if current is None or (current.source == "call" and not self.newer(current)):
            self.state.provenance[name] = entry

    def typed(self, key: str, raw: Any) -> tuple[bool, Any]:
        """``(True, value)`` with the value as its field's type, or ``(False, None)`` and a skip.

        A value that does not convert is skipped (``invalid_value``, the raw value kept),
        never a dead letter: the rest of the event still applies.
        """
        definition = self.policy.definitions.get(key)
        if definition is None:
            if self.policy.reject_undefined:
                self.skip(f"custom_fields.{key}", raw, "undefined_field")
                return False, None
            return True, raw
        try:
            return True, coerce(definition, raw, region=self.policy.region)
        except InvalidValue:
            self.skip(f"custom_fields.{key}", raw, "invalid_value")
            return False, None

    def custom_fields(self, fields: dict[str, ExtractedValue]) -> None:
        # The worker's inner loop (a dozen fields an event): the state's containers and the
        # policy are read once, and a team without definitions skips ``typed``.
        policy = self.policy
        untyped = not policy.definitions and not policy.reject_undefined
        min_confidence = policy.min_confidence
        current_values = self.state.custom_fields
        provenance = self.state.provenance
        for key, extracted in fields.items():
            raw = extracted.value
            if raw is None:
                continue  # not found in this call: changes nothing
            if untyped:
                value = raw
            else:
                ok, value = self.typed(key, raw)
                if not ok:
                    continue
            name = f"custom_fields.{key}"
            confidence = extracted.confidence
            if confidence is not None and confidence < min_confidence:
                self.skip(name, raw, "low_confidence")
                continue
            reason = self.refusal(name, has_value=key in current_values)
            if reason is not None:
                self.skip(name, raw, reason)
                continue
            entry = self.seen
            if confidence is not None or extracted.evidence is not None:
                seen = self.seen  # built directly: ``replace`` walks the fields each time
                entry = Observation(
                    "call",
                    seen.observed_at,
                    seen.event_id,
                    seen.call_id,
                    confidence,
                    extracted.evidence,
                )
            old = current_values.get(key)
            if old != value:
                current_values[key] = value
                coerced = type(raw) is not type(value) or raw != value
                self.changes.append(Change(name, old, value, raw=raw if coerced else None))
            provenance[name] = entry

    def standard_fields(self, contact: ExtractedContact) -> None:
        values = contact.model_dump(exclude_none=True)
        for name, raw in values.items():
            if name not in CALL_FIELDS:
                self.skip(name, raw, "not_settable_by_calls")
                continue
            value, error = _checked_field(name, raw, self.policy.region)
            if error is not None:
                self.skip(name, raw, f"invalid: {error}")
                continue
            if value is None:
                continue
            reason = self.refusal(name, has_value=getattr(self.state, name) not in (None, ""))
            if reason is not None:
                self.skip(name, value, reason)
            else:
                self.set(name, value, self.seen)

    def lead_status(self) -> None:
        extraction = self.event.extraction
        raw = extraction.lead_status if extraction is not None else None
        current = self.state.provenance.get("lead_status")
        implicit = current is not None and current.implicit
        # The implicit move is weaker than any extracted status (docs/design.md §4.3):
        # an extracted status is compared with what the move replaced.
        basis = current.replaces if current is not None and implicit else current
        if raw is None:
            if self.event.outcome == "completed":
                self.implicit_contacted(basis, moved=implicit)
            return
        try:
            status = normalise_lead_status(raw)
        except ValueError:
            self.skip("lead_status", raw, "invalid: not a status")
            return
        if status == "do_not_contact":
            self.do_not_call(True)
        if is_sticky(self.state.lead_status):
            if status == self.state.lead_status:
                self.keep_earliest("lead_status", self.seen)
            else:
                self.skip("lead_status", status, "sticky_status")
            return
        if status not in SETTABLE_BY_CALLS:
            self.skip("lead_status", status, "not_settable_by_calls")
            return
        # do_not_contact is a compliance signal and applies whatever the order.
        if status == "do_not_contact" or self.newer(basis):
            self.set("lead_status", status, self.seen)
        else:
            self.skip("lead_status", status, "older_than_current")

    def implicit_contacted(self, basis: Observation | None, *, moved: bool) -> None:
        """``new`` → ``contacted`` for a completed call that extracted no status."""
        if basis is not None and basis.source in PEOPLE and not self.newer(basis):
            return  # a person set the status after this call
        seen = self.seen  # built directly, as in ``custom_fields``
        entry = Observation(
            "call", seen.observed_at, seen.event_id, seen.call_id, implicit=True, replaces=basis
        )
        if self.state.lead_status == IMPLICIT_FROM:
            self.set("lead_status", IMPLICIT_TO, entry)
        elif moved:
            self.keep_earliest("lead_status", entry)

    def do_not_call(self, value: bool | None) -> None:
        if value is None:
            return
        if not value:
            if self.state.do_not_call:
                self.skip("do_not_call", False, "only_people_clear_do_not_call")
        elif self.state.do_not_call:
            self.keep_earliest("do_not_call", self.seen)
        else:
            self.set("do_not_call", True, self.seen)

    def tags(self, extracted: list[str]) -> None:
        before = list(self.state.tags)
        tags = self.state.tags
        for raw in extracted:
            tag = raw.strip()
            name = TAG_PREFIX + tag
            if not tag or (tag in tags and name not in self.state.provenance):
                continue  # empty, or a person's tag: calls never touch those
            if tag not in tags and len(tags) >= MAX_TAGS:
                self.skip("tags", tag, "too_many_tags")
                continue
            # The provenance marks it as a call's tag (placed after people's
            # tags) and keeps its earliest observation, as time order would.
            self.keep_earliest(name, self.seen)
            if tag not in tags:
                tags.append(tag)
        self.state.tags = _order_tags(tags, self.state.provenance)
        if self.state.tags != before:
            self.changes.append(Change("tags", before, list(self.state.tags)))


def _order_tags(tags: list[str], provenance: Provenance) -> list[str]:
    # People's tags keep their order; tags from calls follow, sorted by name:
    # an order no delivery order can change, so a late call never reorders.
    people = [t for t in tags if TAG_PREFIX + t not in provenance]
    return people + sorted(t for t in tags if TAG_PREFIX + t in provenance)


def merge(state: ContactState, event: CallCompleted, policy: MergePolicy) -> MergeResult:
    """Merge one event into a contact; the input state is left untouched."""
    job = _Merge(state, event, policy)
    extraction = event.extraction
    if extraction is not None:
        job.custom_fields(extraction.custom_fields)
        if extraction.contact is not None:
            job.standard_fields(extraction.contact)
        if extraction.tags is not None:
            job.tags(extraction.tags)
        job.do_not_call(extraction.do_not_call)
    job.lead_status()
    return MergeResult(job.state, job.changes, job.skipped)
