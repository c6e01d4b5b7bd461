"""The pure eligibility evaluator (docs/design.md §12): each reason, next_eligible_at, properties.

No database: the evaluator takes the contact's facts, its attempts and the policy.
The stream and the endpoint both decide through it (tests/test_eligibility_api.py).
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contact_sync.contacts.lead_status import STICKY
from contact_sync.scheduling.eligibility import (
    HORIZON,
    PERMANENT,
    REASON_CODES,
    Attempt,
    ContactFacts,
    Eligibility,
    Moment,
    _day_start,
    evaluate,
    reasons_at,
    rules_for,
    summarise,
)
from contact_sync.scheduling.numbers import phone_facts
from contact_sync.scheduling.policy import DEFAULT_POLICY, WEEKDAYS, CallingPolicy

DC = "+12025550100"  # America/New_York, no state rules
FLORIDA = "+13055550100"  # America/New_York, FL
ALABAMA = "+12055550100"  # America/Chicago, AL
TEXAS = "+12145550100"  # America/Chicago, TX
RHODE_ISLAND = "+14015550100"  # America/New_York, RI
LOS_ANGELES = "+12135550100"
LONDON = "+442079460958"
TOLL_FREE = "+18005550199"  # no zone, no state
THURSDAY_10_NY = "2026-01-15T15:00:00Z"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def contact(
    phone: str | None = DC,
    *,
    timezone: str | None = None,
    do_not_call: bool = False,
    lead_status: str = "new",
) -> ContactFacts:
    zone, state = phone_facts(phone)
    return ContactFacts(do_not_call, phone, lead_status, timezone, zone, state)


def ask(
    facts: ContactFacts,
    at: str,
    *,
    calls: tuple[tuple[str, str], ...] = (),
    overrides: dict[str, Any] | None = None,
    **policy: Any,
) -> Eligibility:
    """The answer at ``at`` for attempts given as ``(ended_at, outcome)``."""
    rules = rules_for(CallingPolicy.model_validate(policy), **(overrides or {}))
    attempts = [Attempt(utc(ended), outcome) for ended, outcome in calls]
    moment = utc(at)
    return evaluate(facts, summarise(attempts, moment, rules), rules, moment)


def codes(answer: Eligibility) -> list[str]:
    return [reason.code for reason in answer.reasons]


def nxt(answer: Eligibility) -> str | None:
    found = answer.to_dict()["next_eligible_at"]
    assert found is None or isinstance(found, str)
    return found


# --- each reason ------------------------------------------------------------------


def test_a_contact_inside_every_rule_is_eligible_now() -> None:
    answer = ask(contact(), THURSDAY_10_NY)
    assert answer.to_dict() == {
        "eligible": True,
        "at": THURSDAY_10_NY,
        "reasons": [],
        "next_eligible_at": THURSDAY_10_NY,
    }


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        (contact(do_not_call=True), "do_not_call"),
        (contact(None), "no_phone"),
        *[(contact(lead_status=status), "status_closed") for status in STICKY],
    ],
)
def test_a_reason_no_time_clears_has_no_next_time(facts: ContactFacts, code: str) -> None:
    answer = ask(facts, THURSDAY_10_NY)
    assert codes(answer) == [code]
    assert nxt(answer) is None
    assert answer.reasons[0].detail


def test_all_reasons_that_apply_are_listed_in_the_vocabularys_order() -> None:
    answer = ask(contact(None, do_not_call=True, lead_status="customer"), "2026-01-15T03:00:00Z")
    assert codes(answer) == ["do_not_call", "no_phone", "status_closed", "outside_window"]


def test_before_the_window_the_next_time_is_its_start() -> None:
    answer = ask(contact(), "2026-01-15T13:30:00Z")  # 08:30 in New York
    assert codes(answer) == ["outside_window"]
    assert "08:30 in America/New_York" in answer.reasons[0].detail
    assert nxt(answer) == "2026-01-15T14:00:00Z"


def test_after_the_window_the_next_time_is_tomorrows_start_across_midnight() -> None:
    answer = ask(contact(), "2026-01-16T04:59:00Z")  # 23:59 in New York
    assert codes(answer) == ["outside_window"]
    assert nxt(answer) == "2026-01-16T14:00:00Z"


def test_the_federal_floor_clamps_a_wider_policy_window() -> None:
    wide = {"window": {"start": "06:00", "end": "23:00"}}
    assert codes(ask(contact(), "2026-01-15T12:30:00Z", **wide)) == ["outside_window"]  # 07:30
    assert nxt(ask(contact(), "2026-01-15T12:30:00Z", **wide)) == "2026-01-15T13:00:00Z"
    assert codes(ask(contact(), "2026-01-16T02:00:00Z", **wide)) == ["outside_window"]  # 21:00
    assert codes(ask(contact(), "2026-01-16T01:59:00Z", **wide)) == []  # 20:59


def test_a_query_window_spanning_midnight_keeps_only_its_parts_inside_the_floor() -> None:
    overnight = {"window_start": time(20), "window_end": time(9)}
    london = contact(LONDON)
    assert ask(london, "2026-01-15T20:30:00Z", overrides=overnight).eligible
    assert ask(london, "2026-01-15T08:30:00Z", overrides=overnight).eligible
    late = ask(london, "2026-01-15T21:00:00Z", overrides=overnight)
    assert codes(late) == ["outside_window"]
    assert nxt(late) == "2026-01-16T08:00:00Z"


def test_the_number_zone_must_agree_when_its_offset_differs_from_the_timezone() -> None:
    # A Los Angeles timezone and a New York number: inside the window in both zones.
    facts = contact(DC, timezone="America/Los_Angeles")
    late = ask(facts, "2026-01-15T22:30:00Z")  # 14:30 in LA, 17:30 in New York
    assert codes(late) == ["outside_window"]
    assert "the number's zone America/New_York" in late.reasons[0].detail
    assert nxt(late) == "2026-01-16T17:00:00Z"  # 09:00 in LA, 12:00 in New York
    assert ask(facts, "2026-01-15T19:00:00Z").eligible  # 11:00 LA, 14:00 New York


def test_a_number_without_one_zone_adds_nothing() -> None:
    facts = contact(TOLL_FREE, timezone="America/Los_Angeles")
    assert ask(facts, "2026-01-15T23:30:00Z").eligible  # 15:30 in LA


def test_without_a_timezone_the_numbers_zone_comes_before_the_default() -> None:
    assert ask(contact(LONDON), "2026-01-15T10:00:00Z").eligible  # 10:00 in London
    floating = contact(TOLL_FREE)
    assert not ask(floating, "2026-01-15T10:00:00Z").eligible  # 05:00 in New York
    tokyo = {"default_timezone": "Asia/Tokyo"}
    assert ask(floating, "2026-01-15T01:00:00Z", overrides=tokyo).eligible


def test_a_day_the_team_does_not_call_waits_for_the_next_allowed_day() -> None:
    weekdays = {"days": ["mon", "tue", "wed", "thu", "fri"]}
    saturday = ask(contact(), "2026-01-17T15:00:00Z", **weekdays)
    assert codes(saturday) == ["day_not_allowed"]
    assert nxt(saturday) == "2026-01-19T14:00:00Z"  # Monday 09:00


def test_a_team_holiday_waits_for_the_next_day() -> None:
    answer = ask(contact(), THURSDAY_10_NY, holidays=["2026-01-15"])
    assert codes(answer) == ["holiday"]
    assert nxt(answer) == "2026-01-16T14:00:00Z"


def test_a_state_window_narrower_than_the_policy() -> None:
    evening = {"window": {"start": "08:00", "end": "21:00"}}
    answer = ask(contact(FLORIDA), "2026-01-16T01:30:00Z", **evening)  # 20:30 in Florida
    assert codes(answer) == ["jurisdiction_window"]
    assert "Fla. Stat." in answer.reasons[0].detail
    assert nxt(answer) == "2026-01-16T13:00:00Z"
    assert ask(contact(DC), "2026-01-16T01:30:00Z", **evening).eligible


def test_texas_on_sunday_from_noon() -> None:
    answer = ask(contact(TEXAS), "2026-01-18T16:00:00Z")  # Sunday 10:00 in Dallas
    assert codes(answer) == ["jurisdiction_window"]
    assert nxt(answer) == "2026-01-18T18:00:00Z"


def test_rhode_island_on_saturday_from_ten_to_five() -> None:
    wide = {"window": {"start": "08:00", "end": "21:00"}}
    answer = ask(contact(RHODE_ISLAND), "2026-01-17T14:30:00Z", **wide)  # Sat 09:30
    assert codes(answer) == ["jurisdiction_window"]
    assert nxt(answer) == "2026-01-17T15:00:00Z"


def test_no_sunday_and_no_holiday_in_alabama_across_a_long_weekend() -> None:
    # Sunday, then Monday 2026-01-19 (Martin Luther King Jr. Day): Tuesday 09:00 in Birmingham.
    answer = ask(contact(ALABAMA), "2026-01-18T16:00:00Z")
    assert codes(answer) == ["jurisdiction_day"]
    assert "sun" in answer.reasons[0].detail
    assert nxt(answer) == "2026-01-20T15:00:00Z"
    monday = ask(contact(ALABAMA), "2026-01-19T16:00:00Z")
    assert codes(monday) == ["jurisdiction_day"]
    assert "Martin Luther King" in monday.reasons[0].detail


def test_jurisdiction_rules_off_leaves_only_the_floor() -> None:
    off = ask(contact(ALABAMA), "2026-01-18T16:00:00Z", jurisdiction_rules=False)
    assert off.eligible


def test_a_rolling_cap_clears_when_the_oldest_attempt_leaves_the_24_hours() -> None:
    calls = (
        ("2026-01-15T14:00:00Z", "completed"),
        ("2026-01-15T16:00:00Z", "completed"),
        ("2026-01-15T18:00:00Z", "completed"),
    )
    answer = ask(contact(FLORIDA), "2026-01-15T19:00:00Z", calls=calls)
    assert codes(answer) == ["jurisdiction_attempt_cap"]
    assert nxt(answer) == "2026-01-16T14:00:00Z"
    assert ask(contact(DC), "2026-01-15T19:00:00Z", calls=calls).eligible


def test_an_attempt_ending_after_at_is_not_counted() -> None:
    calls = (("2026-01-15T15:00:01Z", "no_answer"),)
    assert ask(contact(), THURSDAY_10_NY, calls=calls).eligible


def test_the_total_cap_has_no_next_time() -> None:
    calls = (("2026-01-01T15:00:00Z", "completed"), ("2026-01-02T15:00:00Z", "completed"))
    answer = ask(contact(), THURSDAY_10_NY, calls=calls, max_attempts_total=2)
    assert codes(answer) == ["max_attempts_total"]
    assert nxt(answer) is None
    assert ask(contact(), THURSDAY_10_NY, calls=calls, max_attempts_total=3).eligible


def test_the_daily_cap_counts_the_contacts_local_day() -> None:
    calls = (("2026-01-15T14:00:00Z", "completed"),)
    answer = ask(contact(), THURSDAY_10_NY, calls=calls, max_attempts_per_day=1)
    assert codes(answer) == ["max_attempts_per_day"]
    assert nxt(answer) == "2026-01-16T14:00:00Z"
    # 23:30 the evening before in New York is another local day (04:30 UTC the same day).
    early = (("2026-01-15T04:30:00Z", "completed"),)
    assert ask(contact(), THURSDAY_10_NY, calls=early, max_attempts_per_day=1).eligible


def test_the_newest_attempt_decides_the_retry_delay() -> None:
    calls = (("2026-01-15T12:00:00Z", "voicemail"), ("2026-01-15T14:00:00Z", "no_answer"))
    answer = ask(contact(), THURSDAY_10_NY, calls=calls)
    assert codes(answer) == ["retry_after"]
    assert nxt(answer) == "2026-01-15T18:00:00Z"  # 4 h after the no_answer
    assert "no_answer" in answer.reasons[0].detail
    busy = ask(contact(), THURSDAY_10_NY, calls=(("2026-01-15T14:45:00Z", "busy"),))
    assert nxt(busy) == "2026-01-15T15:15:00Z"


def test_a_retry_ending_after_the_window_waits_for_the_next_window() -> None:
    calls = (("2026-01-15T20:00:00Z", "no_answer"),)  # 15:00; retry from 19:00
    answer = ask(contact(), "2026-01-15T20:30:00Z", calls=calls)
    assert nxt(answer) == "2026-01-16T14:00:00Z"


def test_nothing_within_14_days_is_null() -> None:
    days = [(date(2026, 1, 15) + timedelta(days=n)).isoformat() for n in range(15)]
    answer = ask(contact(), THURSDAY_10_NY, holidays=days)
    assert codes(answer) == ["holiday"]
    assert nxt(answer) is None
    answer = ask(contact(), THURSDAY_10_NY, holidays=days[:14])
    assert nxt(answer) == "2026-01-29T14:00:00Z"  # 13 days 23 hours ahead


# --- DST ----------------------------------------------------------------------------


def test_spring_forward_in_new_york_2026_03_08() -> None:
    saturday_evening = ask(contact(), "2026-03-07T22:30:00Z")  # 17:30 EST
    assert nxt(saturday_evening) == "2026-03-08T13:00:00Z"  # 09:00 EDT
    night = ask(contact(), "2026-03-08T06:59:59Z")  # 01:59:59 EST, a second before the jump
    assert nxt(night) == "2026-03-08T13:00:00Z"


def test_fall_back_in_new_york_2026_11_01() -> None:
    saturday_evening = ask(contact(), "2026-10-31T21:30:00Z")  # 17:30 EDT
    assert nxt(saturday_evening) == "2026-11-01T14:00:00Z"  # 09:00 EST
    retry = ask(contact(), "2026-11-01T05:30:00Z", calls=(("2026-11-01T05:00:00Z", "voicemail"),))
    assert nxt(retry) == "2026-11-02T14:00:00Z"  # a day later is 00:00 EST: wait for 09:00


def test_the_number_zone_rule_follows_offsets_that_change_at_dst() -> None:
    # Phoenix keeps -07:00; New York moves from -05:00 to -04:00 on 2026-03-08.
    facts = contact(DC, timezone="America/Phoenix")
    before = ask(facts, "2026-03-06T16:30:00Z")  # 09:30 Phoenix, 11:30 New York
    assert before.eligible
    after = ask(facts, "2026-03-09T23:30:00Z")  # 16:30 Phoenix, 19:30 EDT
    assert codes(after) == ["outside_window"]
    assert nxt(after) == "2026-03-10T16:00:00Z"  # 09:00 Phoenix, 12:00 EDT


# --- properties -----------------------------------------------------------------------

PHONES = [DC, FLORIDA, ALABAMA, TEXAS, RHODE_ISLAND, LOS_ANGELES, LONDON, TOLL_FREE, None]
ZONES = [None, "America/New_York", "America/Los_Angeles", "America/Phoenix", "Europe/London"]
OUTCOMES = ["completed", "voicemail", "no_answer", "busy", "failed"]
# Near DST changes, weekends, holidays and window edges.
BASES = [
    datetime(2026, 3, 8, 6, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 5, 0, tzinfo=UTC),
    datetime(2026, 1, 16, 21, 0, tzinfo=UTC),
    datetime(2026, 12, 24, 13, 0, tzinfo=UTC),
    datetime(2026, 7, 3, 23, 30, tzinfo=UTC),
]


@st.composite
def policies(draw: st.DrawFn) -> CallingPolicy:
    start = draw(st.integers(6, 14))
    end = f"{draw(st.integers(start + 1, 23)):02d}:{draw(st.sampled_from(['00', '30']))}"
    return CallingPolicy.model_validate(
        {
            "window": {"start": f"{start:02d}:00", "end": end},
            "days": draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, unique=True)),
            "holidays": draw(st.lists(st.dates(date(2026, 1, 1), date(2026, 12, 31)), max_size=20)),
            "max_attempts_total": draw(st.none() | st.integers(1, 8)),
            "max_attempts_per_day": draw(st.none() | st.integers(1, 3)),
            "retry_after": {o: draw(st.sampled_from(["0m", "30m", "4h", "1d"])) for o in OUTCOMES},
            "jurisdiction_rules": draw(st.booleans()),
        }
    )


@st.composite
def questions(draw: st.DrawFn) -> tuple[ContactFacts, list[Attempt], CallingPolicy, datetime]:
    phone = draw(st.sampled_from(PHONES))
    facts = contact(phone, timezone=draw(st.sampled_from(ZONES)))
    at = draw(st.sampled_from(BASES)) + timedelta(minutes=draw(st.integers(-3000, 3000)))
    attempts = [
        Attempt(at - timedelta(minutes=draw(st.integers(0, 4000))), draw(st.sampled_from(OUTCOMES)))
        for _ in range(draw(st.integers(0, 6)))
    ]
    return facts, attempts, draw(policies()), at


@settings(max_examples=150, deadline=None)
@given(question=questions())
def test_next_eligible_at_is_eligible_and_nothing_earlier_is(
    question: tuple[ContactFacts, list[Attempt], CallingPolicy, datetime],
) -> None:
    facts, calls, policy, at = question
    rules = rules_for(policy)
    attempts = summarise(calls, at, rules)
    answer = evaluate(facts, attempts, rules, at)
    assert answer.eligible == (answer.reasons == ())
    assert {r.code for r in answer.reasons} <= set(REASON_CODES)
    if any(r.code in PERMANENT for r in answer.reasons):
        assert answer.next_eligible_at is None
        return
    end = answer.next_eligible_at or at + HORIZON
    assert at <= end <= at + HORIZON
    if answer.next_eligible_at is not None:
        assert reasons_at(facts, attempts, rules, answer.next_eligible_at) == ()
        if answer.next_eligible_at > at:
            before = answer.next_eligible_at - timedelta(seconds=1)
            assert reasons_at(facts, attempts, rules, before) != ()
    step = max((end - at) / 300, timedelta(minutes=1))
    moment = at + step
    while moment < end:
        assert reasons_at(facts, attempts, rules, moment) != (), moment
        moment += step


@settings(max_examples=100, deadline=None)
@given(question=questions())
def test_a_contact_is_eligible_exactly_when_no_reason_holds_and_reasons_are_unique(
    question: tuple[ContactFacts, list[Attempt], CallingPolicy, datetime],
) -> None:
    facts, calls, policy, at = question
    rules = rules_for(policy)
    reasons = reasons_at(facts, summarise(calls, at, rules), rules, at)
    found = [r.code for r in reasons]
    assert len(found) == len(set(found))
    assert found == sorted(found, key=REASON_CODES.index)
    assert all(r.detail for r in reasons)


def test_the_default_policy_is_the_one_the_design_writes() -> None:
    rules = rules_for(DEFAULT_POLICY)
    assert rules.window == (time(9), time(17))
    assert rules.default_timezone == "America/New_York"
    assert rules.jurisdictions is not None


# --- the open places the stream's SQL reads (contacts/stream_sql.py) ------------------

# Zones whose clocks change at or across midnight, by half hours, or not at all.
ODD_ZONES = [
    "America/Santiago",  # falls back from 24:00 to 23:00 the day before
    "America/Havana",  # springs forward at 00:00
    "Asia/Beirut",  # changes at 00:00
    "America/Asuncion",
    "Australia/Lord_Howe",  # 30-minute changes
    "Pacific/Apia",  # skipped a whole day in 2011
    "America/New_York",
    "Europe/London",
    "UTC",
]


def _check_day_start(zone: ZoneInfo, at: datetime) -> None:
    """A day start, when given, is where ``at``'s local date begins, with every quarter
    hour from it to ``at`` on that date (what the day cap counts); it is declined only
    near a change of offset."""
    start = _day_start(zone, at)
    today = at.astimezone(zone).date()
    quarters = [at - timedelta(minutes=15 * n) for n in range(30 * 4)]
    if start is None:
        assert len({moment.astimezone(zone).utcoffset() for moment in quarters}) > 1
        return
    assert start.astimezone(zone).date() == today
    assert (start - timedelta(microseconds=1)).astimezone(zone).date() != today
    for moment in quarters:
        assert (moment.astimezone(zone).date() == today) == (moment >= start), moment


def _changes(zone: ZoneInfo, year: int) -> list[datetime]:
    """The hours of ``year`` at which ``zone`` changes its offset."""
    hours = [datetime(year, 1, 1, tzinfo=UTC) + timedelta(hours=n) for n in range(366 * 24)]
    return [
        b
        for a, b in itertools.pairwise(hours)
        if a.astimezone(zone).utcoffset() != b.astimezone(zone).utcoffset()
    ]


@pytest.mark.parametrize("zone_name", ODD_ZONES)
def test_the_local_day_start_is_exact_around_every_change_of_offset(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    for change in _changes(zone, 2026) + _changes(zone, 2011):
        for step in range(-6, 31 * 3):
            _check_day_start(zone, change + timedelta(minutes=20 * step))


@settings(max_examples=300, deadline=None)
@given(
    zone_name=st.sampled_from(ODD_ZONES),
    at=st.datetimes(datetime(2010, 1, 1), datetime(2030, 12, 31)).map(
        lambda moment: moment.replace(second=0, microsecond=0, tzinfo=UTC)
    ),
)
def test_the_local_day_start_is_exact_or_declined(zone_name: str, at: datetime) -> None:
    _check_day_start(ZoneInfo(zone_name), at)


def test_santiago_repeats_saturdays_last_hour_and_sunday_starts_after_it() -> None:
    # 2026-04-05 00:00 (-03) turns back to 2026-04-04 23:00 (-04): the hour repeated is
    # Saturday's, so Saturday runs in one piece and Sunday starts an hour after the change.
    zone = ZoneInfo("America/Santiago")
    late_saturday = datetime(2026, 4, 5, 3, 30, tzinfo=UTC)  # 23:30 (-04), the second time
    assert late_saturday.astimezone(zone).date() == date(2026, 4, 4)
    assert _day_start(zone, late_saturday) == datetime(2026, 4, 4, 3, 0, tzinfo=UTC)
    sunday = datetime(2026, 4, 5, 15, 0, tzinfo=UTC)
    assert _day_start(zone, sunday) == datetime(2026, 4, 5, 4, 0, tzinfo=UTC)


def test_an_open_place_carries_its_day_start_and_state_cap() -> None:
    rules = rules_for(DEFAULT_POLICY)
    at = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York, a Friday
    moment = Moment(rules, at)
    florida = moment.open_place(("America/New_York", "America/New_York", "FL"))
    assert florida is not None
    assert florida.day_start == datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
    assert florida.state_cap == 3
    assert moment.open_place(("Asia/Tokyo", None, None)) is None  # 00:00 in Tokyo
