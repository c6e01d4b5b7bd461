"""An event's custom fields are held to the contact's limits, whatever path checks them.

``calls/events._wrap_custom_fields`` checks each value as it wraps it and bounds
the map's size as it goes (the worker's hot path, issue 17); these tests hold it
to the plain composition of the contact model's checks it stands for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contact_sync.calls.events import InvalidEvent, _wrap_custom_fields, parse_event
from contact_sync.contacts.model import (
    MAX_CUSTOM_FIELDS,
    check_custom_fields_size,
    check_custom_key,
    check_custom_value,
)
from tests.factories import call_event

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def reference(fields: dict[Any, Any]) -> dict[str, Any] | str:
    """What the map must become (or the error): each key and value checked, then the size."""
    wrapped: dict[str, Any] = {}
    try:
        for key, item in fields.items():
            if not isinstance(key, str):
                return "custom field keys must be strings"
            check_custom_key(key)
            keys = set(item) if isinstance(item, dict) else set()
            is_wrapped = (
                isinstance(item, dict)
                and "value" in item
                and keys
                <= {
                    "value",
                    "confidence",
                    "evidence",
                }
            )
            candidate = item["value"] if is_wrapped else item
            try:
                check_custom_value(candidate, text_checked=True)
            except ValueError as exc:
                return f"custom field {key}: {exc}"
            wrapped[key] = item if is_wrapped else {"value": item}
        check_custom_fields_size({key: item["value"] for key, item in wrapped.items()})
    except ValueError as exc:
        return str(exc)
    return wrapped


def wrapped_or_error(fields: dict[Any, Any]) -> dict[str, Any] | str:
    try:
        result: dict[str, Any] = _wrap_custom_fields(fields)
    except ValueError as exc:
        return str(exc)
    return result


KEYS = st.one_of(
    st.sampled_from(["budget", "product_interest", "seats", "a", "x" * 64]),
    st.text(max_size=70),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.builds(str.__mul__, st.sampled_from("xy"), st.integers(20_000, 40_000)),  # near 64 KiB
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ITEMS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"value": JSON_VALUES},
        optional={"confidence": st.floats(0, 1), "evidence": st.text(max_size=10)},
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, ITEMS, max_size=6))
def test_the_fast_check_agrees_with_the_contact_model(fields: dict[str, Any]) -> None:
    assert wrapped_or_error(fields) == reference(fields)


@pytest.mark.parametrize(
    "fields",
    [
        {f"k{i}": i for i in range(MAX_CUSTOM_FIELDS + 1)},
        {"a": "x" * 40_000, "b": "y" * 40_000},  # fine alone, not together (64 KiB)
        {"a": {"value": "x" * 40_000, "confidence": 0.9}, "b": "y" * 40_000},
        {"n": 2**64},  # beyond a 64-bit integer
        {"n": {"value": [1, {"deep": 2**64}]}},
        {1: "not a string key"},
    ],
)
def test_an_event_over_the_contact_limits_is_invalid(fields: dict[Any, Any]) -> None:
    assert isinstance(reference(fields), str)
    raw = call_event("team_1", event_id="e1", call_id="c1", contact_id="ct_1")
    raw["occurred_at"] = "2026-11-20T14:00:00Z"
    raw["extraction"] = {"custom_fields": fields}
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw, now=NOW)
    assert caught.value.reason == "invalid_payload"
    assert "custom_fields" in caught.value.message


def test_the_most_an_event_may_carry_is_accepted() -> None:
    fields: dict[str, Any] = {f"k{i}": i for i in range(MAX_CUSTOM_FIELDS - 1)}
    fields["long"] = "x" * 60_000
    assert wrapped_or_error(fields) == reference(fields)
    assert isinstance(wrapped_or_error(fields), dict)
