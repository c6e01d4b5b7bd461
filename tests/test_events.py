"""Parsing ``call.completed`` payloads: what is accepted, and the dead-letter reason of the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contact_sync.calls.events import CallCompleted, ExtractedValue, InvalidEvent, parse_event
from tests.factories import call_event

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def payload(**overrides: Any) -> dict[str, Any]:
    """A valid event as the call pipeline sends it; ``None`` removes a key."""
    event = call_event(
        "team_1",
        event_id="evt_1",
        call_id="call_1",
        contact_id="ct_1",
        occurred_at="2026-11-20T14:04:05Z",
    )
    event.update(overrides)
    return {key: value for key, value in event.items() if value is not None}


def reason_of(raw: Any) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw, now=NOW)
    assert caught.value.message
    return caught.value.reason


def test_a_valid_event_parses_with_an_aware_occurred_at() -> None:
    event = parse_event(payload(occurred_at="2026-11-20T16:04:05.250+02:00"), now=NOW)
    assert isinstance(event, CallCompleted)
    assert event.occurred_at == datetime(2026, 11, 20, 14, 4, 5, 250_000, tzinfo=UTC)
    assert event.extraction is None


def test_the_full_example_of_the_contract_parses() -> None:
    event = parse_event(
        payload(
            contact_id=None,
            phone="+12025551234",
            campaign_id="cmp_1",
            duration_seconds=95,
            extraction={
                "extractor_version": "v3",
                "custom_fields": {
                    "budget": {"value": 50000, "confidence": 0.92, "evidence": "fifty thousand"},
                    "product_interest": "solar",
                    "callback_day": None,
                },
                "contact": {"email": "ann@example.com", "job_title": "CTO"},
                "lead_status": "qualified",
                "do_not_call": True,
                "tags": ["hot-lead"],
                "summary": "Interested in a 6 kW system; call back Tuesday.",
            },
        ),
        now=NOW,
    )
    assert event.phone == "+12025551234"
    assert event.extraction is not None
    assert event.extraction.lead_status == "qualified"
    assert event.extraction.do_not_call is True
    assert event.extraction.tags == ["hot-lead"]


@pytest.mark.parametrize("raw", [[], "an event", 42, None, [payload()]])
def test_a_payload_that_is_not_an_object_is_invalid(raw: Any) -> None:
    assert reason_of(raw) == "invalid_payload"


@pytest.mark.parametrize(
    "missing", ["event_id", "type", "schema_version", "team_id", "call_id", "occurred_at"]
)
def test_a_payload_missing_a_required_field_is_invalid(missing: str) -> None:
    raw = payload()
    del raw[missing]
    assert reason_of(raw) == "invalid_payload"


def test_a_payload_missing_the_outcome_is_invalid() -> None:
    raw = payload()
    del raw["outcome"]
    assert reason_of(raw) == "invalid_payload"


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_id": 17},
        {"event_id": ""},
        {"team_id": ["team_1"]},
        {"call_id": 3.5},
        {"type": "call.started"},
        {"outcome": "hung_up"},
        {"schema_version": "1"},
        {"schema_version": True},
        {"schema_version": 1.0},
        {"duration_seconds": "95"},
        {"duration_seconds": -1},
        {"duration_seconds": True},
        {"occurred_at": "yesterday"},
        {"occurred_at": 1_795_000_000},
        {"occurred_at": "1795000000"},
        {"extraction": "nothing"},
        {"extraction": {"do_not_call": "yes"}},
        {"extraction": {"do_not_call": 1}},
        {"extraction": {"tags": "hot-lead"}},
        {"extraction": {"tags": [1]}},
        {"extraction": {"lead_status": 3}},
        {"extraction": {"custom_fields": ["budget"]}},
        {"extraction": {"custom_fields": {"budget": {"value": 1, "confidence": 1.5}}}},
        {"extraction": {"custom_fields": {"budget": {"value": 1, "confidence": "high"}}}},
        {"extraction": {"custom_fields": {"budget": {"value": 1, "confidence": True}}}},
        {"extraction": {"contact": {"email": 5}}},
        {"extraction": {"unknown": 1}},
        {"unknown": 1},
    ],
)
def test_a_payload_with_a_wrong_type_is_invalid(overrides: dict[str, Any]) -> None:
    assert reason_of(payload(**overrides)) == "invalid_payload"


@pytest.mark.parametrize("naive", ["2026-11-20T14:04:05", "2026-11-20T14:04:05.123", "2026-11-20"])
def test_an_occurred_at_without_an_offset_is_invalid(naive: str) -> None:
    assert reason_of(payload(occurred_at=naive)) == "invalid_payload"


def test_an_event_with_neither_contact_id_nor_phone_is_invalid() -> None:
    assert reason_of(payload(contact_id=None)) == "invalid_payload"


def test_an_event_with_only_a_phone_is_valid() -> None:
    event = parse_event(payload(contact_id=None, phone="(202) 555-1234"), now=NOW)
    assert event.contact_id is None
    assert event.phone == "(202) 555-1234"


@pytest.mark.parametrize("key", ["bad key", "budget!", "", "x" * 65, "-leading-dash"])
def test_a_custom_field_key_that_is_not_a_slug_is_invalid(key: str) -> None:
    raw = payload(extraction={"custom_fields": {key: 1}})
    assert reason_of(raw) == "invalid_payload"


@pytest.mark.parametrize(
    "custom_fields",
    [
        {"budget": float("nan")},
        {"budget": float("inf")},
        {"budget": {"value": float("nan"), "confidence": 0.9}},
        {"budget": {"value": [1, float("-inf")]}},
        {"budget": {"value": 1, "confidence": float("nan")}},
    ],
)
def test_a_value_that_is_not_finite_json_is_invalid(custom_fields: dict[str, Any]) -> None:
    assert reason_of(payload(extraction={"custom_fields": custom_fields})) == "invalid_payload"


def test_a_custom_field_value_with_a_nul_character_is_invalid() -> None:
    raw = payload(extraction={"custom_fields": {"note": "a\x00b"}})
    assert reason_of(raw) == "invalid_payload"


@pytest.mark.parametrize("version", [2, 0, 99])
def test_an_unknown_schema_version_is_unsupported(version: int) -> None:
    assert reason_of(payload(schema_version=version)) == "unsupported_schema_version"


def test_an_unknown_schema_version_wins_over_other_problems() -> None:
    # A version-2 event may have a shape this worker cannot read; the version is what to fix.
    raw = payload(schema_version=2, outcome="transferred", extra_field=True)
    assert reason_of(raw) == "unsupported_schema_version"


def test_an_event_more_than_ten_minutes_ahead_occurred_in_the_future() -> None:
    ahead = (NOW + timedelta(minutes=10, seconds=1)).isoformat()
    assert reason_of(payload(occurred_at=ahead)) == "occurred_in_future"


def test_an_event_an_hour_ahead_in_another_offset_occurred_in_the_future() -> None:
    assert reason_of(payload(occurred_at="2026-11-20T17:00:00+01:00")) == "occurred_in_future"


@pytest.mark.parametrize("minutes", [5, 10])
def test_an_event_at_most_ten_minutes_ahead_is_accepted(minutes: int) -> None:
    ahead = NOW + timedelta(minutes=minutes)
    assert parse_event(payload(occurred_at=ahead.isoformat()), now=NOW).occurred_at == ahead


def test_a_plain_custom_field_value_is_read_as_a_value_without_confidence() -> None:
    raw = payload(
        extraction={
            "custom_fields": {
                "product_interest": "solar",
                "size": 6,
                "options": ["battery", "panels"],
                "address": {"city": "Austin"},
                "callback_day": None,
            }
        }
    )
    extraction = parse_event(raw, now=NOW).extraction
    assert extraction is not None
    assert extraction.custom_fields == {
        "product_interest": ExtractedValue(value="solar"),
        "size": ExtractedValue(value=6),
        "options": ExtractedValue(value=["battery", "panels"]),
        "address": ExtractedValue(value={"city": "Austin"}),
        "callback_day": ExtractedValue(value=None),
    }


def test_a_custom_field_given_with_confidence_and_evidence_keeps_them() -> None:
    raw = payload(
        extraction={
            "custom_fields": {
                "budget": {"value": 50000, "confidence": 0.92, "evidence": "fifty thousand"},
                "timeline": {"value": "Q3", "confidence": 1},
                "callback_day": {"value": None},
            }
        }
    )
    extraction = parse_event(raw, now=NOW).extraction
    assert extraction is not None
    assert extraction.custom_fields == {
        "budget": ExtractedValue(value=50000, confidence=0.92, evidence="fifty thousand"),
        "timeline": ExtractedValue(value="Q3", confidence=1),
        "callback_day": ExtractedValue(value=None),
    }


def test_an_object_with_keys_beyond_value_confidence_evidence_is_a_plain_value() -> None:
    raw = payload(extraction={"custom_fields": {"quote": {"value": 10, "currency": "USD"}}})
    extraction = parse_event(raw, now=NOW).extraction
    assert extraction is not None
    assert extraction.custom_fields["quote"] == ExtractedValue(
        value={"value": 10, "currency": "USD"}
    )


def test_unknown_standard_fields_in_the_extracted_contact_reach_the_merge() -> None:
    # The merge names them in `skipped`; they do not fail the whole event.
    raw = payload(extraction={"contact": {"email": "a@example.com", "phone": "+12025551234"}})
    extraction = parse_event(raw, now=NOW).extraction
    assert extraction is not None
    assert extraction.contact is not None
    assert extraction.contact.model_dump(exclude_none=True) == {
        "email": "a@example.com",
        "phone": "+12025551234",
    }


@pytest.mark.parametrize(
    "contact",
    [{"nickname": float("nan")}, {"nickname": "a\ud800"}, {"n" * 65: "x"}],
    ids=["NaN", "lone surrogate", "long name"],
)
def test_an_unknown_extracted_contact_field_no_database_can_store_is_invalid(
    contact: dict[str, Any],
) -> None:
    # Unknown fields are named in the history record's `skipped`, a JSON column.
    assert reason_of(payload(extraction={"contact": contact})) == "invalid_payload"


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_id": "evt_\x00"},
        {"extraction": {"summary": "a\x00b"}},
        {"extraction": {"summary": "a\ud800b"}},
        {"extraction": {"tags": ["\udfff"]}},
    ],
    ids=["NUL in event_id", "NUL in summary", "lone surrogate in summary", "lone surrogate tag"],
)
def test_text_no_database_can_store_is_invalid(overrides: dict[str, Any]) -> None:
    assert reason_of(payload(**overrides)) == "invalid_payload"


# --- direction and started_at (docs/design.md §11) ---------------------------------------


def test_an_event_without_direction_or_started_at_stays_valid_and_reads_them_as_absent() -> None:
    event = parse_event(payload(), now=NOW)
    assert (event.direction, event.started_at) == (None, None)


@pytest.mark.parametrize("direction", ["outbound", "inbound"])
def test_a_direction_is_read(direction: str) -> None:
    assert parse_event(payload(direction=direction), now=NOW).direction == direction


@pytest.mark.parametrize("direction", ["Outbound", "both", "", 1, True])
def test_another_direction_is_invalid(direction: Any) -> None:
    assert reason_of(payload(direction=direction)) == "invalid_payload"


def test_a_started_at_is_read_like_occurred_at() -> None:
    event = parse_event(payload(started_at="2026-11-20T16:00:05+02:00"), now=NOW)
    assert event.started_at == datetime(2026, 11, 20, 14, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize("started_at", ["2026-11-20T14:00:05", 1_763_650_000, "yesterday"])
def test_a_started_at_read_as_occurred_at_would_refuse_it_is_invalid(started_at: Any) -> None:
    assert reason_of(payload(started_at=started_at)) == "invalid_payload"


def test_a_started_at_after_occurred_at_is_invalid_and_says_so() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(payload(started_at="2026-11-20T14:04:06Z"), now=NOW)
    assert caught.value.reason == "invalid_payload"
    assert caught.value.message == "event: started_at must not be after occurred_at"
