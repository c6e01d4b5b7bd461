"""The event decoder answers any JSON with an event or a dead-letter reason, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contact_sync.calls.events import CallCompleted, InvalidEvent, parse_event
from tests.factories import call_event

NOW = datetime(2026, 11, 26, tzinfo=UTC)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
VALID = call_event(
    "team_1",
    event_id="evt_1",
    call_id="call_1",
    phone="+12025551234",
    occurred_at="2026-11-20T15:04:05Z",
)


def _decode(payload: Any) -> None:
    try:
        event = parse_event(payload, now=NOW)
    except InvalidEvent as exc:
        reason = exc.reason
    else:
        assert isinstance(event, CallCompleted)
        return
    assert reason in {"invalid_payload", "unsupported_schema_version", "occurred_in_future"}


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_an_event_or_a_reasoned_rejection(payload: Any) -> None:
    _decode(payload)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(VALID)), json_values)
def test_a_valid_event_with_one_field_replaced_by_anything_never_crashes(
    field: str, value: Any
) -> None:
    _decode({**VALID, field: value})


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_extraction_never_crashes(extraction: Any) -> None:
    _decode({**VALID, "extraction": extraction})
