"""The merge of a call into a contact, one rule at a time (docs/design.md §4)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contact_sync.calls.events import CallCompleted
from contact_sync.calls.merge import ContactState, MergePolicy, MergeResult, merge
from contact_sync.contacts.records import Change, Observation, Skip, observation_json
from tests.factories import call_event

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
POLICY = MergePolicy()


def call(
    minute: int = 0,
    *,
    event_id: str = "evt_1",
    outcome: str = "voicemail",
    occurred_at: str | None = None,
    **extraction: Any,
) -> CallCompleted:
    """A call ``minute`` minutes after T0; a voicemail unless said otherwise, so the
    implicit ``new`` → ``contacted`` move stays out of tests about other rules."""
    payload = call_event(
        "team_1",
        event_id=event_id,
        call_id=f"call_{event_id}",
        contact_id="ct_1",
        occurred_at=occurred_at or (T0 + timedelta(minutes=minute)).isoformat(),
        outcome=outcome,
    )
    if extraction:
        payload["extraction"] = extraction
    return CallCompleted.model_validate(payload)


def contact(**values: Any) -> ContactState:
    return ContactState(**{"first_name": "Ann", "last_name": "Lee", **values})


def by_person(minute: int, source: str = "api") -> Observation:
    """Provenance of a person's write at T0 + minute, as the store records it."""
    return Observation(source, (T0 + timedelta(minutes=minute)).isoformat())


def merged(
    state: ContactState, *events: CallCompleted, policy: MergePolicy = POLICY
) -> MergeResult:
    """Merge the events in the order given; the result of the last one."""
    result = MergeResult(state, [], [])
    for event in events:
        result = merge(result.state, event, policy)
    return result


def reasons(result: MergeResult) -> dict[str, str]:
    return {item.field: item.reason for item in result.skipped}


# 4.1 Order


def test_a_newer_call_overwrites_a_value_an_older_call_set() -> None:
    result = merged(
        contact(),
        call(0, event_id="evt_1", custom_fields={"budget": 1000}, contact={"job_title": "CTO"}),
        call(5, event_id="evt_2", custom_fields={"budget": 2000}, contact={"job_title": "CEO"}),
    )
    assert result.state.custom_fields == {"budget": 2000}
    assert result.state.job_title == "CEO"
    assert result.state.provenance["job_title"].event_id == "evt_2"


def test_an_older_call_never_overwrites_a_newer_value() -> None:
    newer = merged(
        contact(),
        call(5, event_id="evt_2", custom_fields={"budget": 2000}, contact={"job_title": "CEO"}),
    ).state
    result = merge(
        newer,
        call(0, event_id="evt_1", custom_fields={"budget": 1000}, contact={"job_title": "CTO"}),
        POLICY,
    )
    assert result.state == newer
    assert result.changes == []
    assert result.skipped == [
        Skip("custom_fields.budget", 1000, "older_than_current"),
        Skip("job_title", "CTO", "older_than_current"),
    ]


@pytest.mark.parametrize("order", [("evt_a", "evt_b"), ("evt_b", "evt_a")])
def test_on_equal_times_the_larger_event_id_wins(order: tuple[str, str]) -> None:
    values = {"evt_a": "solar", "evt_b": "wind"}
    events = [call(0, event_id=e, custom_fields={"product": values[e]}) for e in order]
    result = merged(contact(), *events)
    assert result.state.custom_fields == {"product": "wind"}
    assert result.state.provenance["custom_fields.product"].event_id == "evt_b"


def test_times_are_compared_as_instants_whatever_their_offset() -> None:
    # 16:30+01:00 is 15:30Z: older than 15:45Z although its text sorts later.
    later = call(event_id="evt_1", occurred_at="2026-11-20T15:45:00Z", custom_fields={"x": 2})
    earlier = call(
        event_id="evt_2", occurred_at="2026-11-20T16:30:00+01:00", custom_fields={"x": 1}
    )
    assert merged(contact(), later, earlier).state.custom_fields == {"x": 2}
    assert merged(contact(), earlier, later).state.custom_fields == {"x": 2}


def test_a_person_write_with_a_short_timestamp_is_compared_as_an_instant() -> None:
    state = contact(
        lead_status="warm",
        provenance={"lead_status": Observation("api", "2026-11-20T16:00:00+01:00")},
    )
    older = merge(state, call(-1, lead_status="qualified"), POLICY)
    newer = merge(state, call(1, lead_status="qualified"), POLICY)
    assert older.state.lead_status == "warm"
    assert newer.state.lead_status == "qualified"


def test_a_newer_call_repeating_the_value_becomes_its_observation_without_a_change() -> None:
    first = merged(contact(), call(0, event_id="evt_1", custom_fields={"budget": 1000})).state
    result = merge(first, call(5, event_id="evt_2", custom_fields={"budget": 1000}), POLICY)
    assert result.changes == []
    assert result.state.provenance["custom_fields.budget"].event_id == "evt_2"


def test_each_field_follows_its_own_newest_observation() -> None:
    newer = merged(contact(), call(5, event_id="evt_2", custom_fields={"budget": 2000})).state
    result = merge(
        newer,
        call(0, event_id="evt_1", custom_fields={"budget": 1000, "product": "solar"}),
        POLICY,
    )
    assert result.state.custom_fields == {"budget": 2000, "product": "solar"}


# 4.2 Custom fields


def test_a_null_custom_value_changes_nothing() -> None:
    before = merged(contact(), call(0, event_id="evt_1", custom_fields={"callback_day": "Tue"}))
    result = merge(
        before.state, call(5, event_id="evt_2", custom_fields={"callback_day": None}), POLICY
    )
    assert result.state == before.state
    assert result.changes == []
    assert result.skipped == []


def test_a_value_below_the_minimum_confidence_is_skipped_and_not_applied() -> None:
    result = merge(
        contact(),
        call(custom_fields={"budget": {"value": 50000, "confidence": 0.49, "evidence": "fifty?"}}),
        POLICY,
    )
    assert result.state.custom_fields == {}
    assert "custom_fields.budget" not in result.state.provenance
    assert result.skipped == [Skip("custom_fields.budget", 50000, "low_confidence")]


def test_a_value_at_the_minimum_confidence_is_applied() -> None:
    result = merge(
        contact(), call(custom_fields={"budget": {"value": 1, "confidence": 0.5}}), POLICY
    )
    assert result.state.custom_fields == {"budget": 1}


def test_the_minimum_confidence_is_the_team_policy() -> None:
    event = call(custom_fields={"budget": {"value": 1, "confidence": 0.8}})
    strict = merge(contact(), event, MergePolicy(min_confidence=0.9))
    lenient = merge(contact(), event, MergePolicy(min_confidence=0.1))
    assert strict.state.custom_fields == {}
    assert reasons(strict) == {"custom_fields.budget": "low_confidence"}
    assert lenient.state.custom_fields == {"budget": 1}


def test_a_plain_value_has_no_confidence_to_check_and_is_applied() -> None:
    result = merge(
        contact(), call(custom_fields={"product": "solar"}), MergePolicy(min_confidence=1)
    )
    assert result.state.custom_fields == {"product": "solar"}


def test_a_custom_value_records_the_call_its_confidence_and_its_evidence() -> None:
    event = call(3, custom_fields={"budget": {"value": 5, "confidence": 0.9, "evidence": "five"}})
    result = merge(contact(), event, POLICY)
    assert observation_json(result.state.provenance["custom_fields.budget"]) == {
        "source": "call",
        "observed_at": "2026-11-20T15:03:00.000000+00:00",
        "event_id": "evt_1",
        "call_id": "call_evt_1",
        "confidence": 0.9,
        "evidence": "five",
    }


def test_custom_fields_the_call_does_not_mention_are_kept() -> None:
    state = contact(custom_fields={"size": 6})
    result = merge(state, call(custom_fields={"product": "solar"}), POLICY)
    assert result.state.custom_fields == {"size": 6, "product": "solar"}


# 4.2 Standard fields


@pytest.mark.parametrize(
    ("region", "heard", "stored"),
    [("US", "(202) 555-0143", "+12025550143"), ("GB", "020 7946 0958", "+442079460958")],
)
def test_an_extracted_phone_is_normalised_with_the_team_region(
    region: str, heard: str, stored: str
) -> None:
    result = merge(contact(), call(contact={"phone_secondary": heard}), MergePolicy(region=region))
    assert result.state.phone_secondary == stored


def test_an_extracted_email_keeps_its_local_part_and_lower_cases_its_domain() -> None:
    result = merge(contact(), call(contact={"email": "Ann.Lee@Example.COM"}), POLICY)
    assert result.state.email == "Ann.Lee@example.com"


def test_an_invalid_value_is_skipped_and_named_while_the_rest_applies() -> None:
    event = call(
        contact={
            "email": "not-an-email",
            "timezone": "Mars/Olympus",
            "phone_secondary": "12",
            "job_title": "CTO",
            "preferred_contact_method": "Phone",
        },
        custom_fields={"budget": 1000},
    )
    result = merge(contact(), event, POLICY)
    assert result.state.job_title == "CTO"
    assert result.state.preferred_contact_method == "phone"
    assert result.state.custom_fields == {"budget": 1000}
    assert (result.state.email, result.state.timezone, result.state.phone_secondary) == (
        None,
        None,
        None,
    )
    skipped = {item.field: item for item in result.skipped}
    assert set(skipped) == {"email", "timezone", "phone_secondary"}
    assert skipped["email"].value == "not-an-email"
    assert skipped["timezone"].value == "Mars/Olympus"
    assert all(item.reason.startswith("invalid: ") for item in skipped.values())


def test_a_standard_field_calls_may_not_set_is_skipped() -> None:
    result = merge(contact(), call(contact={"phone": "+12025551234", "job_title": "CTO"}), POLICY)
    assert reasons(result) == {"phone": "not_settable_by_calls"}
    assert result.state.job_title == "CTO"


def test_a_call_fills_an_empty_field() -> None:
    result = merge(contact(), call(contact={"timezone": "America/Chicago"}), POLICY)
    assert result.state.timezone == "America/Chicago"
    assert result.changes == [Change("timezone", None, "America/Chicago")]


def test_a_call_replaces_a_value_that_came_from_an_older_call() -> None:
    result = merged(
        contact(),
        call(0, event_id="evt_1", contact={"email": "ann@old.example"}),
        call(5, event_id="evt_2", contact={"email": "ann@new.example"}),
    )
    assert result.state.email == "ann@new.example"


@pytest.mark.parametrize("source", ["api", "import"])
def test_a_value_set_by_a_person_is_not_overwritten_by_a_call(source: str) -> None:
    state = contact(email="ann@person.example", provenance={"email": by_person(0, source)})
    result = merge(state, call(5, contact={"email": "ann@ai.example"}), POLICY)
    assert result.state == state
    assert reasons(result) == {"email": "set_by_person"}


@pytest.mark.parametrize("source", ["api", "import"])
def test_a_custom_value_set_by_a_person_is_not_overwritten_by_a_call(source: str) -> None:
    state = contact(
        custom_fields={"budget": 40000}, provenance={"custom_fields.budget": by_person(0, source)}
    )
    result = merge(state, call(5, custom_fields={"budget": 50000}), POLICY)
    assert result.state == state
    assert reasons(result) == {"custom_fields.budget": "set_by_person"}


def test_a_team_that_opts_in_lets_a_newer_call_overwrite_a_person() -> None:
    state = contact(
        email="ann@person.example",
        custom_fields={"budget": 40000},
        provenance={"email": by_person(0), "custom_fields.budget": by_person(0)},
    )
    event = call(5, contact={"email": "ann@ai.example"}, custom_fields={"budget": 50000})
    result = merge(state, event, MergePolicy(calls_overwrite_people=True))
    assert result.state.email == "ann@ai.example"
    assert result.state.custom_fields == {"budget": 50000}


def test_a_team_that_opts_in_still_keeps_a_person_value_newer_than_the_call() -> None:
    state = contact(email="ann@person.example", provenance={"email": by_person(10)})
    result = merge(
        state,
        call(5, contact={"email": "ann@ai.example"}),
        MergePolicy(calls_overwrite_people=True),
    )
    assert result.state.email == "ann@person.example"
    assert reasons(result) == {"email": "older_than_current"}


def test_a_call_after_a_person_cleared_a_field_fills_it() -> None:
    state = contact(job_title=None, provenance={"job_title": by_person(0)})
    assert merge(state, call(5, contact={"job_title": "CTO"}), POLICY).state.job_title == "CTO"


def test_a_call_before_a_person_cleared_a_field_does_not_fill_it() -> None:
    state = contact(job_title=None, provenance={"job_title": by_person(10)})
    result = merge(state, call(5, contact={"job_title": "CTO"}), POLICY)
    assert result.state.job_title is None
    assert reasons(result) == {"job_title": "older_than_current"}


def test_a_placeholder_name_without_provenance_is_replaced_by_an_extracted_name() -> None:
    state = ContactState(first_name="Unknown", last_name="Unknown")
    result = merge(state, call(contact={"first_name": "  Ann ", "last_name": "Lee"}), POLICY)
    assert (result.state.first_name, result.state.last_name) == ("Ann", "Lee")


# 4.2 Tags and summary


def test_tags_are_the_union_of_the_contact_and_the_call() -> None:
    state = contact(tags=["vip"])
    result = merge(state, call(tags=["hot-lead", "vip", " solar ", "hot-lead"]), POLICY)
    assert result.state.tags == ["vip", "hot-lead", "solar"]
    assert result.changes == [Change("tags", ["vip"], ["vip", "hot-lead", "solar"])]


def test_a_call_never_removes_a_tag() -> None:
    state = merged(contact(tags=["vip"]), call(0, event_id="evt_1", tags=["hot-lead"])).state
    result = merge(state, call(5, event_id="evt_2", tags=[]), POLICY)
    assert result.state.tags == ["vip", "hot-lead"]
    assert result.changes == []


def test_call_tags_follow_peoples_tags_in_name_order_whatever_the_delivery_order() -> None:
    first = call(0, event_id="evt_1", tags=["solar"])
    second = call(5, event_id="evt_2", tags=["hot-lead", "solar"])
    in_order = merged(contact(tags=["vip"]), first, second).state
    reversed_ = merged(contact(tags=["vip"]), second, first).state
    assert in_order.tags == reversed_.tags == ["vip", "hot-lead", "solar"]
    assert in_order == reversed_


def test_the_summary_stays_out_of_the_contact() -> None:
    # The apply service keeps it in the call's history record; notes are not part of the merge.
    state = contact(custom_fields={"budget": 1})
    result = merge(state, call(summary="Interested in a 6 kW system."), POLICY)
    assert result.state == state
    assert result.changes == []


# 4.3 Lead status


def test_a_completed_call_moves_a_new_contact_to_contacted() -> None:
    result = merge(contact(), call(outcome="completed"), POLICY)
    assert result.state.lead_status == "contacted"
    assert result.changes == [Change("lead_status", "new", "contacted")]


@pytest.mark.parametrize("outcome", ["voicemail", "no_answer", "busy", "failed"])
def test_a_call_that_did_not_complete_leaves_a_new_contact_new(outcome: str) -> None:
    assert merge(contact(), call(outcome=outcome), POLICY).state.lead_status == "new"


@pytest.mark.parametrize("status", ["qualified", "unqualified", "warm"])
def test_the_implicit_move_starts_only_from_new(status: str) -> None:
    state = contact(lead_status=status, provenance={"lead_status": by_person(-10)})
    assert merge(state, call(outcome="completed"), POLICY).state == state


def test_an_extracted_status_from_an_older_call_replaces_the_implicit_contacted() -> None:
    result = merged(
        contact(),
        call(5, event_id="evt_2", outcome="completed"),
        call(0, event_id="evt_1", outcome="completed", lead_status="qualified"),
    )
    assert result.state.lead_status == "qualified"


def test_a_later_completed_call_does_not_undo_an_extracted_status() -> None:
    result = merged(
        contact(),
        call(0, event_id="evt_1", outcome="completed", lead_status="qualified"),
        call(5, event_id="evt_2", outcome="completed"),
    )
    assert result.state.lead_status == "qualified"


@pytest.mark.parametrize("order", [(0, 5), (5, 0)])
def test_extracted_statuses_are_compared_with_each_other_by_time(order: tuple[int, int]) -> None:
    statuses = {0: "unqualified", 5: "qualified"}
    events = [
        call(minute, event_id=f"evt_{minute}", outcome="completed", lead_status=statuses[minute])
        for minute in order
    ]
    assert merged(contact(), *events).state.lead_status == "qualified"


@pytest.mark.parametrize(
    ("extracted", "status"),
    [
        ("contacted", "contacted"),
        ("qualified", "qualified"),
        ("unqualified", "unqualified"),
        ("Qualified", "qualified"),
        (" Unqualified ", "unqualified"),
    ],
)
def test_a_call_may_set_a_working_status(extracted: str, status: str) -> None:
    result = merge(contact(), call(outcome="completed", lead_status=extracted), POLICY)
    assert result.state.lead_status == status


@pytest.mark.parametrize("extracted", ["new", "converted", "Customer", "churned", "warm"])
def test_a_call_may_not_set_other_statuses(extracted: str) -> None:
    state = contact(lead_status="qualified")
    result = merge(state, call(lead_status=extracted), POLICY)
    assert result.state.lead_status == "qualified"
    assert reasons(result) == {"lead_status": "not_settable_by_calls"}


def test_an_extracted_status_that_is_no_slug_is_skipped() -> None:
    result = merge(contact(), call(lead_status="!!"), POLICY)
    assert result.state.lead_status == "new"
    assert reasons(result) == {"lead_status": "invalid: not a status"}


@pytest.mark.parametrize("sticky", ["converted", "customer", "churned", "do_not_contact"])
@pytest.mark.parametrize("extracted", ["contacted", "qualified", "unqualified"])
def test_a_call_never_moves_a_contact_out_of_a_sticky_status(sticky: str, extracted: str) -> None:
    state = contact(lead_status=sticky, provenance={"lead_status": by_person(0)})
    result = merge(state, call(5, outcome="completed", lead_status=extracted), POLICY)
    assert result.state == state
    assert reasons(result) == {"lead_status": "sticky_status"}


@pytest.mark.parametrize("sticky", ["converted", "customer", "churned", "do_not_contact"])
def test_a_completed_call_does_not_move_a_sticky_status(sticky: str) -> None:
    state = contact(lead_status=sticky, provenance={"lead_status": by_person(0)})
    assert merge(state, call(5, outcome="completed"), POLICY).state == state


def test_an_extracted_do_not_contact_sets_the_status_and_do_not_call() -> None:
    result = merge(contact(), call(outcome="completed", lead_status="Do Not Contact"), POLICY)
    assert result.state.lead_status == "do_not_contact"
    assert result.state.do_not_call is True
    assert sorted(result.changes, key=lambda change: change.field) == [
        Change("do_not_call", False, True),
        Change("lead_status", "new", "do_not_contact"),
    ]


def test_an_extracted_do_not_contact_from_an_older_call_still_applies() -> None:
    result = merged(
        contact(),
        call(5, event_id="evt_2", outcome="completed", lead_status="qualified"),
        call(0, event_id="evt_1", outcome="completed", lead_status="do_not_contact"),
    )
    assert result.state.lead_status == "do_not_contact"
    assert result.state.do_not_call is True


def test_on_a_sticky_status_an_extracted_do_not_contact_still_sets_do_not_call() -> None:
    state = contact(lead_status="customer", provenance={"lead_status": by_person(0)})
    result = merge(state, call(5, lead_status="do_not_contact"), POLICY)
    assert result.state.lead_status == "customer"
    assert result.state.do_not_call is True


def test_a_completed_call_before_a_person_reset_the_status_to_new_does_not_move_it() -> None:
    state = contact(lead_status="new", provenance={"lead_status": by_person(5)})
    assert merge(state, call(0, outcome="completed"), POLICY).state.lead_status == "new"
    assert merge(state, call(10, outcome="completed"), POLICY).state.lead_status == "contacted"


def test_an_extracted_status_older_than_a_person_reset_stays_out_even_after_the_implicit_move() -> (
    None
):
    # The person reset the contact to `new` at minute 3; a completed call at 5
    # moved it to `contacted`; a status heard at minute 1 predates the reset.
    state = contact(lead_status="new", provenance={"lead_status": by_person(3)})
    result = merged(
        state,
        call(5, event_id="evt_2", outcome="completed"),
        call(1, event_id="evt_1", outcome="completed", lead_status="qualified"),
    )
    assert result.state.lead_status == "contacted"
    assert reasons(result) == {"lead_status": "older_than_current"}


def test_a_newer_extracted_status_replaces_one_a_person_set_earlier() -> None:
    # People's edits are protected for contact fields, not for the status (docs/design.md §4.2).
    state = contact(lead_status="warm", provenance={"lead_status": by_person(0)})
    assert merge(state, call(5, lead_status="qualified"), POLICY).state.lead_status == "qualified"
    assert merge(state, call(-5, lead_status="qualified"), POLICY).state.lead_status == "warm"


# 4.4 Do not call


def test_do_not_call_from_a_call_sets_it() -> None:
    result = merge(contact(), call(do_not_call=True), POLICY)
    assert result.state.do_not_call is True
    assert result.changes == [Change("do_not_call", False, True)]


def test_do_not_call_from_an_older_call_still_sets_it() -> None:
    newer = contact(
        do_not_call=False,
        job_title="CTO",
        provenance={"do_not_call": by_person(10), "job_title": by_person(10)},
    )
    assert merge(newer, call(0, do_not_call=True), POLICY).state.do_not_call is True


def test_a_call_never_sets_do_not_call_back_to_false() -> None:
    state = contact(do_not_call=True, provenance={"do_not_call": by_person(0)})
    result = merge(state, call(5, do_not_call=False), POLICY)
    assert result.state == state
    assert result.skipped == [Skip("do_not_call", False, "only_people_clear_do_not_call")]


def test_do_not_call_false_on_a_callable_contact_changes_nothing() -> None:
    result = merge(contact(), call(do_not_call=False), POLICY)
    assert result.changes == []
    assert result.skipped == []


def test_do_not_call_remembers_the_earliest_call_that_asked() -> None:
    first = call(0, event_id="evt_1", do_not_call=True)
    second = call(5, event_id="evt_2", do_not_call=True)
    for events in ((first, second), (second, first)):
        state = merged(contact(), *events).state
        assert state.provenance["do_not_call"].event_id == "evt_1"


# The result


def test_the_input_state_is_not_mutated() -> None:
    state = contact(
        email="ann@person.example",
        custom_fields={"budget": 1, "options": ["a"]},
        tags=["vip"],
        provenance={"email": by_person(0)},
    )
    snapshot = copy.deepcopy(state)
    merge(
        state,
        call(
            5,
            outcome="completed",
            custom_fields={"budget": 2, "options": ["b"]},
            contact={"email": "ann@ai.example", "job_title": "CTO"},
            lead_status="qualified",
            do_not_call=True,
            tags=["hot-lead"],
        ),
        MergePolicy(calls_overwrite_people=True),
    )
    assert state == snapshot


def test_changes_name_each_field_with_its_old_and_new_value() -> None:
    state = contact(email="ann@old.example", custom_fields={"budget": 1})
    result = merge(
        state,
        call(
            outcome="completed",
            custom_fields={"budget": 2, "product": "solar"},
            contact={"email": "ann@new.example"},
            tags=["hot-lead"],
        ),
        POLICY,
    )
    assert sorted(result.changes, key=lambda change: change.field) == [
        Change("custom_fields.budget", 1, 2),
        Change("custom_fields.product", None, "solar"),
        Change("email", "ann@old.example", "ann@new.example"),
        Change("lead_status", "new", "contacted"),
        Change("tags", [], ["hot-lead"]),
    ]
