"""Eligibility of one contact and the eligible stream (docs/design.md §12), on both databases.

The stream and the endpoint decide through the same evaluator; the property below
holds them equal over generated teams, policies, calls and instants.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine

from contact_sync.accounts.teams import Team, create_team
from contact_sync.contacts.query import EligibleQuery, list_eligible
from contact_sync.errors import ValidationFailed
from contact_sync.scheduling.check import contact_eligibility
from tests.factories import insert_call, make_contact, store_policy
from tests.test_api import (
    CONTACTS,
    ELIGIBLE,
    Api,
    _api,
    _client,
    assert_error,
    assert_validation_error,
)

AT = "2026-11-19T15:00:00Z"  # a Thursday: 10:00 in New York, 07:00 in Los Angeles


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    """The app on this test's database, with a key of each of two teams."""
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def eligibility(api: Api, contact_id: str, **params: str) -> Any:
    response = api.get(f"{CONTACTS}/{contact_id}/eligibility", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- the endpoint ---------------------------------------------------------------------


def test_the_three_sample_contacts_of_the_issue(api: Api) -> None:
    at = moment("2026-11-19T19:00:00Z")  # 14:00 in New York, 11:00 in Los Angeles
    florida = api.create(firstName="Flo", phone="+1 305 555 0100")
    for hours in (20, 9, 2):
        ended = at - timedelta(hours=hours)
        insert_call(api.engine, api.team.id, florida["id"], ended_at=ended, outcome="completed")
    split = api.create(firstName="Lou", phone="+1 212 555 0100", timezone="America/Los_Angeles")
    recent = api.create(firstName="Nell", phone="+1 202 555 0100")
    insert_call(api.engine, api.team.id, recent["id"], ended_at=at - timedelta(hours=1))

    answer = eligibility(api, florida["id"], at="2026-11-19T19:00:00Z")
    assert [r["code"] for r in answer["reasons"]] == ["jurisdiction_attempt_cap"]
    # The oldest leaves the 24 hours at 18:00 in New York, after the window: 09:00 tomorrow.
    assert answer["next_eligible_at"] == "2026-11-20T14:00:00Z"
    assert eligibility(api, florida["id"], at="2026-11-19T19:00:00Z") == answer

    answer = eligibility(api, split["id"], at="2026-11-19T23:30:00Z")  # 15:30 LA, 18:30 NY
    assert [r["code"] for r in answer["reasons"]] == ["outside_window"]
    assert answer["next_eligible_at"] == "2026-11-20T17:00:00Z"  # 09:00 LA, 12:00 NY

    answer = eligibility(api, recent["id"], at="2026-11-19T19:00:00Z")
    assert answer["eligible"] is False
    assert [r["code"] for r in answer["reasons"]] == ["retry_after"]
    assert "the next may start at 2026-11-19T22:00:00Z" in answer["reasons"][0]["detail"]
    # 4 h after the no_answer is 17:00 in New York, the window's exclusive end: tomorrow 09:00.
    assert answer["next_eligible_at"] == "2026-11-20T14:00:00Z"


def test_the_answer_has_the_documented_shape(api: Api) -> None:
    contact = api.create(phone="+1 202 555 0100")
    assert eligibility(api, contact["id"], at=AT) == {
        "eligible": True,
        "at": AT,
        "reasons": [],
        "next_eligible_at": AT,
    }
    closed = api.create(phone="+1 202 555 0100", leadStatus="customer", doNotCall=True)
    answer = eligibility(api, closed["id"], at=AT)
    assert [r["code"] for r in answer["reasons"]] == ["do_not_call", "status_closed"]
    assert all(r["detail"] for r in answer["reasons"])
    assert answer["next_eligible_at"] is None


def test_at_defaults_to_now(api: Api) -> None:
    contact = api.create(phone="+1 202 555 0100")
    before = datetime.now(UTC)
    answer = eligibility(api, contact["id"])
    assert before - timedelta(seconds=1) <= moment(answer["at"]) <= datetime.now(UTC)


def test_an_inbound_call_is_no_attempt_and_a_later_one_is_not_counted(api: Api) -> None:
    contact = api.create(phone="+1 202 555 0100")
    at = moment(AT)
    insert_call(api.engine, api.team.id, contact["id"], ended_at=at, direction="inbound")
    insert_call(api.engine, api.team.id, contact["id"], ended_at=at + timedelta(seconds=1))
    assert eligibility(api, contact["id"], at=AT)["eligible"] is True
    later = eligibility(api, contact["id"], at="2026-11-19T15:00:01Z")
    assert [r["code"] for r in later["reasons"]] == ["retry_after"]


def test_the_teams_policy_applies(api: Api) -> None:
    contact = api.create(phone="+1 202 555 0100")
    store_policy(api.engine, api.team.id, days=["mon"], max_attempts_total=1)
    answer = eligibility(api, contact["id"], at=AT)
    assert [r["code"] for r in answer["reasons"]] == ["day_not_allowed"]
    assert answer["next_eligible_at"] == "2026-11-23T14:00:00Z"  # Monday 09:00
    insert_call(api.engine, api.team.id, contact["id"], ended_at=moment(AT) - timedelta(days=3))
    answer = eligibility(api, contact["id"], at=AT)
    assert [r["code"] for r in answer["reasons"]] == ["day_not_allowed", "max_attempts_total"]
    assert answer["next_eligible_at"] is None
    assert api.eligible_ids({"at": "2026-11-23T14:00:00Z"}) == []


def test_another_teams_contact_is_404(api: Api) -> None:
    theirs = api.create(phone="+1 202 555 0100", key=api.other_key)
    assert_error(api.get(f"{CONTACTS}/{theirs['id']}/eligibility"), 404, "Contact not found")
    assert_error(api.get(f"{CONTACTS}/no-such-id/eligibility"), 404, "Contact not found")


@pytest.mark.parametrize(
    "value",
    ["2026-11-19T15:00:00", "tomorrow", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00", ""],
)
def test_a_bad_at_is_422_naming_it(api: Api, value: str) -> None:
    contact = api.create(phone="+1 202 555 0100")
    url = f"{CONTACTS}/{contact['id']}/eligibility"
    assert_validation_error(api.get(url, params={"at": value}), "at")


def test_unknown_or_repeated_parameters_are_422(api: Api) -> None:
    contact = api.create(phone="+1 202 555 0100")
    url = f"{CONTACTS}/{contact['id']}/eligibility"
    assert_validation_error(api.get(url, params={"window_start": "09:00"}), "window_start")
    assert_validation_error(api.get(url, params=[("at", AT), ("at", AT)]), "at")


# --- the stream -------------------------------------------------------------------------


def test_the_cursor_carries_its_at_so_the_pages_of_a_walk_agree(api: Api) -> None:
    ids = [api.create(firstName=f"C{i}", phone="+1 202 555 0100")["id"] for i in range(5)]
    first = api.get(ELIGIBLE, params={"limit": "2", "at": AT}).json()
    assert [c["id"] for c in first["data"]] == ids[:2]
    # Without `at` the next page is still asked at AT, not now (which may be night).
    rest = api.get(ELIGIBLE, params={"limit": "10", "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in rest["data"]] == ids[2:]
    same = {"limit": "10", "cursor": first["next_cursor"], "at": AT}
    assert api.get(ELIGIBLE, params=same).json() == rest
    other = {"limit": "10", "cursor": first["next_cursor"], "at": "2026-11-19T16:00:00Z"}
    assert_validation_error(api.get(ELIGIBLE, params=other), "cursor")


def test_the_stream_leaves_out_a_contact_called_a_moment_ago(api: Api) -> None:
    called = api.create(firstName="Called", phone="+1 202 555 0100")
    waiting = api.create(firstName="Waiting", phone="+1 202 555 0100")
    insert_call(api.engine, api.team.id, called["id"], ended_at=moment(AT) - timedelta(minutes=10))
    assert api.eligible_ids({"at": AT}) == [waiting["id"]]


def test_a_page_is_filled_past_rows_the_evaluator_refuses(conn: Connection) -> None:
    team = create_team(conn, name="Busy Dialer")
    at = moment(AT)
    made = sorted(
        (make_contact(conn, team.id, phone="+12025550100") for _ in range(12)), key=lambda c: c.id
    )
    for contact in made[:9]:
        insert_call(conn, team.id, contact.id, ended_at=at - timedelta(minutes=5))
    page = list_eligible(conn, EligibleQuery(team_id=team.id, at=at, limit=2))
    assert [c.id for c in page.data] == [c.id for c in made[9:11]]
    assert page.next_cursor is not None
    rest = list_eligible(conn, EligibleQuery(team_id=team.id, limit=2, cursor=page.next_cursor))
    assert ([c.id for c in rest.data], rest.next_cursor) == ([made[11].id], None)


def test_the_total_counts_outbound_attempts_up_to_at_of_every_age(conn: Connection) -> None:
    # The total is the contact's attempt_count (kept by the contact writer) less the attempts
    # after `at`: an old attempt counts, an inbound call and a later attempt do not.
    team = create_team(conn, name="Counter")
    at = moment(AT)
    contact = make_contact(conn, team.id, phone="+12025550100")
    insert_call(conn, team.id, contact.id, ended_at=at - timedelta(days=40), outcome="completed")
    insert_call(conn, team.id, contact.id, ended_at=at - timedelta(days=1), outcome="completed")
    insert_call(conn, team.id, contact.id, ended_at=at - timedelta(hours=2), direction="inbound")
    insert_call(conn, team.id, contact.id, ended_at=at + timedelta(hours=1), outcome="busy")
    for cap, eligible in ((2, False), (3, True)):
        store_policy(conn, team.id, max_attempts_total=cap)
        answer = contact_eligibility(conn, team_id=team.id, contact_id=contact.id, at=at)
        codes = [r.code for r in answer.reasons]
        assert codes == ([] if eligible else ["max_attempts_total"]), cap
        page = list_eligible(conn, EligibleQuery(team_id=team.id, at=at))
        assert [c.id for c in page.data] == ([contact.id] if eligible else []), cap
    later = at + timedelta(hours=2)  # now the busy attempt counts: 3 of 3
    answer = contact_eligibility(conn, team_id=team.id, contact_id=contact.id, at=later)
    assert [r.code for r in answer.reasons] == ["max_attempts_total"]
    assert list_eligible(conn, EligibleQuery(team_id=team.id, at=later)).data == []


def test_a_cursor_from_another_walk_is_refused(conn: Connection) -> None:
    team = create_team(conn, name="Walker")
    for _ in range(3):
        make_contact(conn, team.id, phone="+12025550100")
    page = list_eligible(conn, EligibleQuery(team_id=team.id, at=moment(AT), limit=1))
    assert page.next_cursor is not None
    with pytest.raises(ValidationFailed) as caught:
        list_eligible(
            conn,
            EligibleQuery(
                team_id=team.id, at=moment(AT) + timedelta(hours=1), cursor=page.next_cursor
            ),
        )
    assert list(caught.value.details) == ["cursor"]


# --- the stream and the endpoint agree ---------------------------------------------------

PHONES = [
    "+12025550100",  # New York, DC
    "+13055550100",  # New York, Florida (08:00-20:00, 3 a day)
    "+12055550100",  # Chicago, Alabama (no Sunday, holidays)
    "+12145550100",  # Chicago, Texas (Sunday from noon)
    "+14015550100",  # New York, Rhode Island
    "+12135550100",  # Los Angeles
    "+442079460958",  # London
    "+18005550199",  # no zone
    None,
]
ZONES = [None, "America/New_York", "America/Los_Angeles", "America/Phoenix", "Europe/London"]
OUTCOMES = ["completed", "voicemail", "no_answer", "busy", "failed"]
BASES = [
    datetime(2026, 3, 8, 17, 0, tzinfo=UTC),  # DST starts in the US (a Sunday)
    datetime(2026, 11, 1, 17, 0, tzinfo=UTC),  # DST ends (a Sunday)
    datetime(2026, 1, 19, 17, 0, tzinfo=UTC),  # a holiday in Alabama (a Monday)
    datetime(2026, 1, 17, 21, 30, tzinfo=UTC),  # a Saturday, near window ends
    datetime(2026, 1, 15, 16, 0, tzinfo=UTC),  # a Thursday
]
DB_HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def team_policies(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "window": draw(
            st.sampled_from(
                [{}, {"start": "08:00", "end": "21:00"}, {"start": "10:00", "end": "12:30"}]
            )
        ),
        "days": draw(
            st.just(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
            | st.lists(st.sampled_from(["mon", "thu", "sat", "sun"]), min_size=1, unique=True)
        ),
        "holidays": draw(st.lists(st.sampled_from(["2026-01-19", "2026-03-09", "2026-11-02"]))),
        "max_attempts_total": draw(st.none() | st.integers(1, 5)),
        "max_attempts_per_day": draw(st.none() | st.integers(1, 2)),
        "retry_after": {
            "no_answer": draw(st.sampled_from(["0m", "4h"])),
            "busy": draw(st.sampled_from(["0m", "30m", "1d"])),
            "voicemail": "1d",
        },
        "jurisdiction_rules": draw(st.booleans()),
    }


@st.composite
def people(draw: st.DrawFn) -> list[dict[str, Any]]:
    return draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "phone": st.sampled_from(PHONES),
                    "timezone": st.sampled_from(ZONES),
                    "lead_status": st.sampled_from(["new", "new", "qualified", "customer"]),
                    "do_not_call": st.sampled_from([False, False, False, True]),
                    "calls": st.lists(
                        st.tuples(
                            # Some calls at the same instants: ties of the retry delays.
                            st.integers(0, 3000) | st.sampled_from([30, 240, 1440]),
                            st.sampled_from(OUTCOMES),
                            st.booleans(),
                        ),
                        max_size=3,
                    ),
                }
            ),
            min_size=1,
            max_size=8,
        )
    )


def _make_team(
    conn: Connection, crowd: list[dict[str, Any]], at: datetime
) -> tuple[Team, list[str]]:
    team = create_team(conn, name=f"Prop {datetime.now(UTC).timestamp()}")
    ids = []
    for person in crowd:
        fields = {k: v for k, v in person.items() if k != "calls" and v is not None}
        contact = make_contact(conn, team.id, **fields)
        ids.append(contact.id)
        for minutes, outcome, outbound in person["calls"]:
            ended = at - timedelta(minutes=minutes)
            direction = "outbound" if outbound else "inbound"
            insert_call(
                conn, team.id, contact.id, ended_at=ended, outcome=outcome, direction=direction
            )
    return team, ids


def _walk(conn: Connection, team_id: str, at: datetime) -> list[str]:
    seen: list[str] = []
    page = list_eligible(conn, EligibleQuery(team_id=team_id, at=at, limit=3))
    seen += [c.id for c in page.data]
    while page.next_cursor is not None:
        page = list_eligible(conn, EligibleQuery(team_id=team_id, limit=3, cursor=page.next_cursor))
        seen += [c.id for c in page.data]
    return seen


@DB_HYPOTHESIS
@given(
    crowd=people(),
    policy=team_policies(),
    base=st.sampled_from(BASES),
    minutes=st.lists(st.integers(-300, 300), min_size=1, max_size=4),
)
def test_the_stream_holds_exactly_the_contacts_the_endpoint_calls_eligible(
    conn: Connection,
    crowd: list[dict[str, Any]],
    policy: dict[str, Any],
    base: datetime,
    minutes: list[int],
) -> None:
    team, ids = _make_team(conn, crowd, base)
    store_policy(conn, team.id, **policy)
    for offset in minutes:
        at = base + timedelta(minutes=offset)
        expected = [
            contact_id
            for contact_id in ids
            if contact_eligibility(conn, team_id=team.id, contact_id=contact_id, at=at).eligible
        ]
        assert _walk(conn, team.id, at) == sorted(expected), at
