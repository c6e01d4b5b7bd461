"""Properties of the merge over sets of events for one contact (docs/design.md §4).

Events are drawn from small pools (three instants written with several
offsets, a few keys, values and tags) so that ties, repeats, conflicts, low
confidences and invalid values are common. Each pool is flattened into one
list of choices so an example costs few draws and the suite stays fast.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contact_sync.calls.events import CallCompleted, parse_event
from contact_sync.calls.merge import CALL_FIELDS, ContactState, MergePolicy, merge
from contact_sync.contacts.lead_status import KNOWN as KNOWN_LEAD_STATUSES
from contact_sync.contacts.lead_status import STICKY
from contact_sync.contacts.records import Change, Observation
from tests.factories import call_event

BASE = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
NOW = BASE + timedelta(days=1)
EXAMPLES = settings(max_examples=300, deadline=None)
FEWER_EXAMPLES = settings(max_examples=200, deadline=None)  # simpler properties, same strategies


def _occurred_at(minute: int, offset_hours: int) -> str:
    moment = BASE + timedelta(minutes=minute)
    if offset_hours == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


# Three instants, each written three ways: the merge must compare instants, not text.
OCCURRED_AT = tuple(_occurred_at(minute, offset) for minute in (0, 1, 2) for offset in (0, 2, -5))
EVENT_IDS = ("evt_a", "evt_b", "evt_c", "evt_d", "evt_e", "evt_f", "evt_g", "evt_10")
OUTCOMES = ("completed", "voicemail", "no_answer", "busy", "failed")
CUSTOM_KEYS = ("budget", "product", "callback_day")
CUSTOM_VALUES = (None, 50000, "solar", ["panels", "battery"], {"kw": 6}, 1)
CONFIDENCES = (0.2, 0.49, 0.5, 0.9, 1)
CUSTOM_CHOICES = tuple(
    (key, extracted)
    for key in CUSTOM_KEYS
    for value in CUSTOM_VALUES
    for extracted in (
        value,
        *({"value": value, "confidence": c, "evidence": "heard it"} for c in CONFIDENCES),
    )
)
CONTACT_CHOICES = tuple(
    (name, value)
    for name, values in {
        "first_name": ("Ann", "  Bob  ", ""),
        "last_name": ("Lee", "Smith"),
        "email": ("ann@Example.com", "bob@example.org", "not-an-email"),
        "phone_secondary": ("+12025551234", "(202) 555-0143", "020 7946 0958", "12"),
        "job_title": ("CTO", "Owner"),
        "timezone": ("America/Chicago", "Europe/London", "Mars/Olympus"),
        "preferred_contact_method": ("email", "Phone", "sms!"),
        "phone": ("+12025551234",),
    }.items()
    for value in values
)
LEAD_STATUSES = (None, None, *KNOWN_LEAD_STATUSES, "Do Not Contact", "Qualified", "warm", "!!")
TAGS = ("hot-lead", "solar", "callback", " solar ")


@st.composite
def extractions(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    extraction = {
        "custom_fields": dict(draw(st.lists(st.sampled_from(CUSTOM_CHOICES), max_size=3))),
        "contact": dict(draw(st.lists(st.sampled_from(CONTACT_CHOICES), max_size=3))) or None,
        "lead_status": draw(st.sampled_from(LEAD_STATUSES)),
        "do_not_call": draw(st.sampled_from((None, True, False))),
        "tags": draw(st.none() | st.lists(st.sampled_from(TAGS), max_size=3)),
        "summary": draw(st.sampled_from((None, "Call back on Tuesday."))),
    }
    return {key: value for key, value in extraction.items() if value is not None}


@st.composite
def event_sets(draw: st.DrawFn) -> list[CallCompleted]:
    """2 to 8 events for one contact, with distinct ids, parsed as the worker parses them."""
    ids = draw(st.lists(st.sampled_from(EVENT_IDS), min_size=2, max_size=8, unique=True))
    events = []
    for event_id in ids:
        payload = call_event(
            "team_1",
            event_id=event_id,
            call_id=f"call_{event_id}",
            contact_id="ct_1",
            occurred_at=draw(st.sampled_from(OCCURRED_AT)),
            outcome=draw(st.sampled_from(OUTCOMES)),
            extraction=draw(extractions()),
        )
        events.append(parse_event(payload, now=NOW))
    return events


PERSON_VALUES = {
    "first_name": "Carol",
    "last_name": "Jones",
    "email": "carol@example.com",
    "phone_secondary": "+12025550199",
    "job_title": "CFO",
    "timezone": "America/New_York",
    "preferred_contact_method": "sms",
}
# What a person did to a field: nothing, set it, or cleared it; by the API or an
# import; before, at, between or after the instants of the events.
PERSON_WRITES = (
    None,
    *itertools.product(("set", "cleared"), ("api", "import"), (-1, 0, 1, 2, 3)),
)


def person(minute: int, source: str = "api") -> Observation:
    """Provenance as the store writes it for a person's write at BASE + minute."""
    return Observation(source, (BASE + timedelta(minutes=minute)).isoformat())


@st.composite
def start_states(draw: st.DrawFn) -> ContactState:
    """A contact as people left it (a field without provenance is a placeholder)."""
    values: dict[str, Any] = {"first_name": "Unknown", "last_name": "Unknown"}
    provenance: dict[str, Observation] = {}
    for name in CALL_FIELDS:
        write = draw(st.sampled_from(PERSON_WRITES))
        if write is None or (write[0] == "cleared" and name in ("first_name", "last_name")):
            continue
        action, source, minute = write
        provenance[name] = person(minute, source)
        values[name] = PERSON_VALUES[name] if action == "set" else None
    custom_fields: dict[str, Any] = {}
    for key in CUSTOM_KEYS:
        write = draw(st.sampled_from(PERSON_WRITES))
        if write is None:
            continue
        action, source, minute = write
        provenance[f"custom_fields.{key}"] = person(minute, source)
        if action == "set":
            custom_fields[key] = "set by a person"
    status, minute = draw(
        st.sampled_from(
            ((None, None), *itertools.product((*KNOWN_LEAD_STATUSES, "warm"), (-1, 1, 3)))
        )
    )
    if status is not None:
        values["lead_status"] = status
        provenance["lead_status"] = person(minute)
    do_not_call = draw(st.sampled_from((None, -1, 1, 3)))
    if do_not_call is not None:
        values["do_not_call"] = True
        provenance["do_not_call"] = person(do_not_call)
    return ContactState(
        **values,
        custom_fields=custom_fields,
        tags=draw(st.sampled_from(([], ["vip"], ["solar", "vip"]))),
        provenance=provenance,
    )


policies = st.builds(
    MergePolicy,
    region=st.sampled_from(("US", "GB")),
    min_confidence=st.sampled_from((0.5, 0.9)),
    calls_overwrite_people=st.booleans(),
)


@st.composite
def deliveries(draw: st.DrawFn, events: list[CallCompleted]) -> list[CallCompleted]:
    """The events in any order, some of them delivered more than once."""
    repeats = draw(st.lists(st.sampled_from(events), max_size=4))
    return draw(st.permutations([*events, *repeats]))


def deliver(
    state: ContactState, events: Iterable[CallCompleted], policy: MergePolicy
) -> list[ContactState]:
    """The states after each delivery; an event id seen before is skipped, as the inbox does."""
    states = [state]
    processed: set[str] = set()
    for event in events:
        if event.event_id not in processed:
            processed.add(event.event_id)
            states.append(merge(states[-1], event, policy).state)
    return states


def in_time_order(events: list[CallCompleted]) -> list[CallCompleted]:
    return sorted(events, key=lambda event: (event.occurred_at, event.event_id))


@EXAMPLES
@given(start=start_states(), events=event_sets(), policy=policies, data=st.data())
def test_any_delivery_order_with_duplicates_gives_the_state_of_time_order(
    start: ContactState, events: list[CallCompleted], policy: MergePolicy, data: st.DataObject
) -> None:
    expected = deliver(start, in_time_order(events), policy)[-1]
    delivered = deliver(start, data.draw(deliveries(events)), policy)[-1]
    assert delivered == expected  # every field, the tag order and all provenance


@EXAMPLES
@given(events=event_sets(), policy=policies, data=st.data())
def test_a_new_inbound_contact_ends_the_same_in_any_delivery_order(
    events: list[CallCompleted], policy: MergePolicy, data: st.DataObject
) -> None:
    start = ContactState(first_name="Unknown", last_name="Unknown")
    expected = deliver(start, in_time_order(events), policy)[-1]
    delivered = deliver(start, data.draw(deliveries(events)), policy)[-1]
    assert delivered == expected


@FEWER_EXAMPLES
@given(start=start_states(), events=event_sets(), policy=policies, data=st.data())
def test_do_not_call_never_goes_from_true_to_false_through_events(
    start: ContactState, events: list[CallCompleted], policy: MergePolicy, data: st.DataObject
) -> None:
    states = deliver(start, data.draw(deliveries(events)), policy)
    for before, after in itertools.pairwise(states):
        assert after.do_not_call or not before.do_not_call


@FEWER_EXAMPLES
@given(start=start_states(), events=event_sets(), policy=policies, data=st.data())
def test_a_sticky_lead_status_never_changes_through_events(
    start: ContactState, events: list[CallCompleted], policy: MergePolicy, data: st.DataObject
) -> None:
    states = deliver(start, data.draw(deliveries(events)), policy)
    for before, after in itertools.pairwise(states):
        if before.lead_status in STICKY:
            assert after.lead_status == before.lead_status
    if start.lead_status in STICKY:
        assert states[-1].provenance["lead_status"] == start.provenance["lead_status"]


@EXAMPLES
@given(start=start_states(), events=event_sets(), policy=policies, data=st.data())
def test_values_set_by_people_are_never_overwritten_unless_the_team_opts_in(
    start: ContactState, events: list[CallCompleted], policy: MergePolicy, data: st.DataObject
) -> None:
    policy = MergePolicy(region=policy.region, min_confidence=policy.min_confidence)
    final = deliver(start, data.draw(deliveries(events)), policy)[-1]
    for name in CALL_FIELDS:
        if getattr(start, name) is not None and name in start.provenance:
            assert getattr(final, name) == getattr(start, name)
            assert final.provenance[name] == start.provenance[name]
    for key, value in start.custom_fields.items():
        assert final.custom_fields[key] == value
        assert final.provenance[f"custom_fields.{key}"] == start.provenance[f"custom_fields.{key}"]
    assert final.tags[: len(start.tags)] == start.tags


@FEWER_EXAMPLES
@given(start=start_states(), events=event_sets(), policy=policies, data=st.data())
def test_the_changes_are_exactly_the_differences_between_the_states(
    start: ContactState, events: list[CallCompleted], policy: MergePolicy, data: st.DataObject
) -> None:
    state = start
    for event in data.draw(st.permutations(events)):
        before = state.copy()
        result = merge(state, event, policy)
        assert state == before  # the input is never mutated
        assert sorted(result.changes, key=lambda c: c.field) == _differences(state, result.state)
        state = result.state


def _differences(before: ContactState, after: ContactState) -> list[Change]:
    changes = [
        Change(name, getattr(before, name), getattr(after, name))
        for name in (*CALL_FIELDS, "lead_status", "do_not_call", "tags")
        if getattr(before, name) != getattr(after, name)
    ]
    for key in sorted(set(before.custom_fields) | set(after.custom_fields)):
        old, new = before.custom_fields.get(key), after.custom_fields.get(key)
        if old != new:
            changes.append(Change(f"custom_fields.{key}", old, new))
    return sorted(changes, key=lambda c: c.field)
