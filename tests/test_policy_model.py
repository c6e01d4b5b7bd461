"""The calling policy model, pure (docs/design.md §12; issue 14 item 2).

- The defaults are the ones §12 writes; a partial document keeps the defaults of what it
  leaves out, also inside ``window`` and ``retry_after``; camelCase and snake_case both.
- Values take their wire form only (no lax ints, bools, dates or times); each bad value is
  named by its path (``retry_after.busy``, ``window.start``, ``holidays.3``).
- Sizes are bounded: at most 1000 holidays, refused before any is parsed.
- Round trip: what a policy dumps (as stored, as answered, in camelCase) validates to the
  same policy.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_sync.errors import ValidationFailed
from contact_sync.scheduling.policy import (
    DEFAULT_POLICY,
    MAX_HOLIDAYS,
    WEEKDAYS,
    CallingPolicy,
    format_duration,
    parse_policy,
    policy_json,
)

DEFAULTS = {
    "window": {"start": "09:00", "end": "17:00"},
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "holidays": [],
    "default_timezone": "America/New_York",
    "max_attempts_total": None,
    "max_attempts_per_day": None,
    "retry_after": {
        "no_answer": "4h",
        "busy": "30m",
        "voicemail": "1d",
        "failed": "1h",
        "completed": "0m",
    },
    "jurisdiction_rules": True,
}


def errors_of(body: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_policy(body)
    return caught.value.details


def test_the_defaults_are_those_of_the_design() -> None:
    assert policy_json(DEFAULT_POLICY) == DEFAULTS
    assert parse_policy({}) == DEFAULT_POLICY


def test_a_partial_document_keeps_the_defaults_also_inside_nested_keys() -> None:
    policy = parse_policy({"retryAfter": {"busy": "2h"}, "window": {"end": "19:30"}})
    assert policy_json(policy) == {
        **DEFAULTS,
        "window": {"start": "09:00", "end": "19:30"},
        "retry_after": {**DEFAULTS["retry_after"], "busy": "2h"},
    }


def test_camel_and_snake_case_read_alike() -> None:
    snake = {
        "default_timezone": "Europe/Paris",
        "max_attempts_per_day": 2,
        "retry_after": {"no_answer": "90m"},
        "jurisdiction_rules": False,
    }
    camel = {
        "defaultTimezone": "Europe/Paris",
        "maxAttemptsPerDay": 2,
        "retryAfter": {"noAnswer": "90m"},
        "jurisdictionRules": False,
    }
    assert parse_policy(snake) == parse_policy(camel)
    assert policy_json(parse_policy(camel))["retry_after"]["no_answer"] == "90m"


def test_days_and_holidays_are_kept_once_in_order() -> None:
    policy = parse_policy(
        {"days": ["sun", "mon", "sun"], "holidays": ["2026-12-25", "2026-01-01", "2026-12-25"]}
    )
    assert policy.days == ["mon", "sun"]
    assert policy.holidays == [date(2026, 1, 1), date(2026, 12, 25)]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"retry_after": {"busy": "soon"}}, "retry_after.busy"),
        ({"retryAfter": {"noAnswer": "4 h"}}, "retry_after.no_answer"),
        ({"retry_after": {"voicemail": "366d"}}, "retry_after.voicemail"),
        ({"retry_after": {"failed": "-1h"}}, "retry_after.failed"),
        ({"retry_after": {"completed": 30}}, "retry_after.completed"),
        ({"retry_after": {"busy": "4h\n"}}, "retry_after.busy"),
        ({"retry_after": {"busy": "٤h"}}, "retry_after.busy"),  # Arabic-Indic digit four
        ({"retry_after": "4h"}, "retry_after"),
        ({"window": {"start": "9:00"}}, "window.start"),
        ({"window": {"start": "24:00", "end": "23:00"}}, "window.start"),
        ({"window": {"end": "17:60"}}, "window.end"),
        ({"window": {"start": 32400}}, "window.start"),  # seconds: pydantic's lax time
        ({"window": {"start": "０９:００"}}, "window.start"),  # full-width digits
        ({"window": {"start": "18:00"}}, "window.start"),  # later than the default end
        ({"window": {"start": "10:00", "end": "10:00"}}, "window.end"),
        ({"window": None}, "window"),
        ({"days": []}, "days"),
        ({"days": "mon"}, "days"),
        ({"days": ["mon", "Tue"]}, "days.1"),
        ({"days": ["mon"] * 29}, "days"),
        ({"holidays": ["2026-12-25", "2026-1-1", "x", "2026-02-30"]}, "holidays.1"),
        ({"holidays": ["2026-12-25", "2026-12-26", "2026-12-27", "2026-02-30"]}, "holidays.3"),
        ({"holidays": [1767225600]}, "holidays.0"),  # a Unix timestamp: pydantic's lax date
        ({"holidays": ["2026-12-25T00:00:00"]}, "holidays.0"),
        ({"default_timezone": "Mars/Olympus"}, "default_timezone"),
        ({"defaultTimezone": "localtime"}, "default_timezone"),
        ({"default_timezone": 5}, "default_timezone"),
        ({"default_timezone": "A" * 65}, "default_timezone"),
        ({"max_attempts_total": 0}, "max_attempts_total"),
        ({"max_attempts_total": 10_001}, "max_attempts_total"),
        ({"max_attempts_total": True}, "max_attempts_total"),
        ({"max_attempts_total": "6"}, "max_attempts_total"),
        ({"maxAttemptsPerDay": 1.5}, "max_attempts_per_day"),
        ({"max_attempts_per_day": 10**40}, "max_attempts_per_day"),
        ({"jurisdiction_rules": "yes"}, "jurisdiction_rules"),
        ({"jurisdiction_rules": 1}, "jurisdiction_rules"),
    ],
)
def test_a_bad_value_is_named_by_its_path(body: dict[str, Any], key: str) -> None:
    details = errors_of(body)
    assert key in details, details
    assert details[key]
    assert not details[key].startswith("Value error")


def test_each_bad_value_of_one_document_is_named() -> None:
    details = errors_of(
        {
            "window": {"start": "nine"},
            "retry_after": {"busy": "x", "failed": "y"},
            "holidays": ["2026-12-25", "no"],
        }
    )
    assert set(details) == {"window.start", "retry_after.busy", "retry_after.failed", "holidays.1"}


def test_an_unknown_key_is_named_as_sent_at_any_depth() -> None:
    details = errors_of({"callWindow": {}, "retryAfter": {"noAnswer": "1h", "hangUp": "1h"}})
    assert details == {"callWindow": "Unknown key", "retry_after.hangUp": "Unknown key"}
    assert errors_of({"window": {"start": "10:00", "stop": "11:00"}}) == {
        "window.stop": "Unknown key"
    }


def test_a_window_out_of_order_names_the_key_its_author_sent() -> None:
    assert errors_of({"window": {"start": "18:00"}}) == {
        "window.start": "Must be earlier than end (17:00)"
    }
    assert errors_of({"window": {"end": "08:30"}}) == {
        "window.end": "Must be later than start (09:00)"
    }


def test_a_document_that_is_not_an_object_is_refused_as_the_body() -> None:
    for body in ([], "policy", None, 3):
        assert set(errors_of(body)) == {"body"}


def test_too_many_holidays_are_refused_before_any_is_parsed() -> None:
    at_most = [str(date(2026, 1, 1) + timedelta(days=i)) for i in range(MAX_HOLIDAYS)]
    assert len(parse_policy({"holidays": at_most}).holidays) == MAX_HOLIDAYS
    huge = ["not a date"] * 200_000
    started = time.perf_counter()
    details = errors_of({"holidays": huge})
    assert time.perf_counter() - started < 0.5
    assert details == {"holidays": "Must list at most 1000 dates, not 200000"}


# --------------------------------------------------------------------------- round trip
durations = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.integers(0, 365),
    st.sampled_from(["m", "h", "d"]),
)
clocks = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid policy document, any of its keys left out."""
    start, end = sorted(draw(st.lists(clocks, min_size=2, max_size=2, unique=True)))
    retry = {
        name: draw(durations)
        for name in draw(
            st.sets(st.sampled_from(["no_answer", "busy", "voicemail", "failed", "completed"]))
        )
    }
    full = {
        "window": {"start": start, "end": end},
        "days": draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=10)),
        "holidays": [str(d) for d in draw(st.lists(st.dates(date(2000, 1, 1), date(2100, 1, 1))))],
        "default_timezone": draw(st.sampled_from(["America/New_York", "Europe/Paris", "UTC"])),
        "max_attempts_total": draw(st.none() | st.integers(1, 10_000)),
        "max_attempts_per_day": draw(st.none() | st.integers(1, 1_000)),
        "retry_after": retry,
        "jurisdiction_rules": draw(st.booleans()),
    }
    kept = draw(st.sets(st.sampled_from(sorted(full))))
    return {key: full[key] for key in kept}


@given(documents())
def test_a_policy_dumped_and_read_back_is_the_same(document: dict[str, Any]) -> None:
    policy = parse_policy(document)
    assert parse_policy(policy_json(policy)) == policy
    assert CallingPolicy.model_validate(policy.model_dump(mode="json", by_alias=True)) == policy
    assert policy_json(parse_policy(policy_json(policy))) == policy_json(policy)


@given(st.integers(0, 365 * 24 * 60))
def test_a_duration_is_said_exactly_in_its_shortest_unit(minutes: int) -> None:
    text = format_duration(timedelta(minutes=minutes))
    assert parse_policy({"retry_after": {"busy": text}}).retry_after.busy == timedelta(
        minutes=minutes
    )
