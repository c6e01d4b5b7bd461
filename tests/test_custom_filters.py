"""The ``cf.`` filters on the contacts list and the eligible stream (issue 15 item 3;
docs/design.md §13), on PostgreSQL and on SQLite.

Each operator per type; values coerced by the field's definition; only values of the
field's type match; combined with the other filters and counted by ``total``; the
eligible stream narrowed the same way; 422 naming the parameter for a bad value, an
undefined key (another team's included), an operator the type has not; hostile input.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from contact_sync.accounts.teams import Team
from tests.test_api import CONTACTS, Api, _api, _client, assert_validation_error
from tests.test_custom_fields import BUDGET, CALLBACK, HOMEOWNER, INTEREST, OPTIONS, define

ELIGIBLE = f"{CONTACTS}/eligible"
AT = "2026-11-19T15:00:00Z"  # 10:00 in New York: inside the default window
FIELDS = [
    BUDGET,
    INTEREST,
    HOMEOWNER,
    CALLBACK,
    {"key": "seats", "label": "Seats", "type": "integer"},
    {"key": "met_at", "label": "Met", "type": "datetime"},
    {"key": "wants", "label": "Wants", "type": "multi_select", "options": OPTIONS},
    {"key": "note", "label": "Note", "type": "text"},
]


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


@pytest.fixture
def people(api: Api) -> dict[str, str]:
    """Four contacts of the team with typed values, one with an untyped budget, none at all."""
    api.create(firstName="Untyped", customFields={"budget": "$7k", "callback_day": "soon"})
    for body in FIELDS:
        define(api, body)
    made = {
        "ann": api.create(
            firstName="Ann",
            phone="+1 212 555 0101",
            leadStatus="qualified",
            customFields={
                "budget": "$7.5k",
                "product_interest": "Solar panels",
                "homeowner": "YES",
                "callback_day": "2026-12-24",
                "seats": 3,
                "met_at": "2026-11-01T10:00:00-05:00",
                "wants": "solar, wind",
                "note": "call after 5",
            },
        ),
        "bob": api.create(
            firstName="Bob",
            phone="+1 212 555 0102",
            leadStatus="new",
            customFields={
                "budget": 5000,
                "product_interest": "wind",
                "homeowner": False,
                "callback_day": "2027-01-05",
                "seats": 10,
                "met_at": "2026-11-01T15:00:00.5Z",
                "wants": ["wind"],
            },
        ),
        "cat": api.create(
            firstName="Cat",
            phone="+1 212 555 0103",
            leadStatus="qualified",
            customFields={"budget": 12000.5, "product_interest": "pv"},
        ),
        "dan": api.create(firstName="Dan", phone="+1 212 555 0104", leadStatus="qualified"),
    }
    return {name: contact["id"] for name, contact in made.items()}


def names(api: Api, params: dict[str, Any], url: str = CONTACTS) -> list[str]:
    response = api.get(url, params=params)
    assert response.status_code == 200, response.text
    return sorted(c["first_name"] for c in response.json()["data"])


def total(api: Api, params: dict[str, Any]) -> int:
    response = api.get(CONTACTS, params={"limit": 1, **params})
    assert response.status_code == 200, response.text
    count: int = response.json()["total"]
    return count


CASES = [
    ({"cf.budget": "7500"}, ["Ann"]),
    ({"cf.budget": "$5,000"}, ["Bob"]),
    ({"cf.budget.in": "5k,12000.5"}, ["Bob", "Cat"]),
    ({"cf.budget.gte": "7.5k"}, ["Ann", "Cat"]),
    ({"cf.budget.gt": "7500"}, ["Cat"]),
    ({"cf.budget.lte": "7500"}, ["Ann", "Bob"]),
    ({"cf.budget.lt": "7500"}, ["Bob"]),
    ({"cf.budget.gte": "-1"}, ["Ann", "Bob", "Cat"]),  # below min: a question, not a write
    ({"cf.budget.exists": "true"}, ["Ann", "Bob", "Cat"]),  # "$7k" is no number
    ({"cf.budget.exists": "false"}, ["Dan", "Untyped"]),
    ({"cf.seats.gt": "3"}, ["Bob"]),
    ({"cf.seats.lte": "10"}, ["Ann", "Bob"]),
    ({"cf.product_interest": "Solar panels"}, ["Ann", "Cat"]),
    ({"cf.product_interest.in": "WIND, solar"}, ["Ann", "Bob", "Cat"]),
    ({"cf.homeowner": "yes"}, ["Ann"]),
    ({"cf.homeowner": "false"}, ["Bob"]),
    ({"cf.homeowner.exists": "true"}, ["Ann", "Bob"]),
    ({"cf.callback_day": "2026-12-24"}, ["Ann"]),
    ({"cf.callback_day.gte": "2026-12-25"}, ["Bob"]),
    ({"cf.callback_day.lt": "2027-01-05T08:00:00Z"}, ["Ann"]),
    ({"cf.callback_day.exists": "false"}, ["Cat", "Dan", "Untyped"]),  # "soon" is no date
    ({"cf.met_at.gt": "2026-11-01T15:00:00Z"}, ["Bob"]),  # .5 s later: time order
    ({"cf.met_at.lte": "2026-11-01T10:00:00-05:00"}, ["Ann"]),
    ({"cf.met_at.gte": "2026-11-01T16:00:00+01:00"}, ["Ann", "Bob"]),
    ({"cf.wants": "wind"}, ["Ann", "Bob"]),
    ({"cf.wants": "solar,wind"}, ["Ann"]),
    ({"cf.wants.in": "solar,pv"}, ["Ann"]),
    ({"cf.note": "call after 5"}, ["Ann"]),
    ({"cf.note.exists": "true"}, ["Ann"]),
    ({"cf.budget.gte": "5000", "cf.product_interest": "wind"}, ["Bob"]),
]


@pytest.mark.parametrize(("params", "expected"), CASES, ids=[str(p) for p, _ in CASES])
def test_each_operator_per_type(
    api: Api, people: dict[str, str], params: Any, expected: Any
) -> None:
    assert names(api, params) == expected
    assert total(api, params) == len(expected)


def test_filters_combine_with_lead_status_search_and_total(
    api: Api, people: dict[str, str]
) -> None:
    both = {"cf.budget.gte": "5000", "leadStatus": "qualified"}
    assert names(api, both) == ["Ann", "Cat"]
    assert total(api, both) == 2
    assert names(api, {**both, "search": "cat"}) == ["Cat"]
    assert names(api, {**both, "cf.product_interest": "solar", "hasPhone": "true"}) == [
        "Ann",
        "Cat",
    ]
    page = api.get(CONTACTS, params={**both, "limit": 1, "offset": 1}).json()
    assert page["total"] == 2
    assert len(page["data"]) == 1


def test_the_eligible_stream_is_narrowed_alike(api: Api, people: dict[str, str]) -> None:
    everyone = names(api, {"at": AT}, ELIGIBLE)
    assert everyone == ["Ann", "Bob", "Cat", "Dan"]
    assert names(api, {"at": AT, "cf.budget.gte": "6000"}, ELIGIBLE) == ["Ann", "Cat"]
    assert names(api, {"at": AT, "cf.wants": "wind", "cf.homeowner": "n"}, ELIGIBLE) == ["Bob"]
    assert names(api, {"at": AT, "cf.budget.exists": "false"}, ELIGIBLE) == ["Dan"]
    first = api.get(ELIGIBLE, params={"at": AT, "cf.product_interest": "solar", "limit": 1}).json()
    rest = api.get(
        ELIGIBLE,
        params={"cursor": first["next_cursor"], "cf.product_interest": "solar", "limit": 1},
    ).json()
    assert sorted(c["first_name"] for c in first["data"] + rest["data"]) == ["Ann", "Cat"]
    assert rest["next_cursor"] is None
    bad = api.get(ELIGIBLE, params={"at": AT, "cf.nope": "1"})
    assert_validation_error(bad, "cf.nope")


BAD = [
    ({"cf.budget": "lots"}, "cf.budget"),
    ({"cf.budget.gte": "1" * 10_000}, "cf.budget.gte"),
    ({"cf.budget": "NaN"}, "cf.budget"),
    ({"cf.budget.lt": "inf"}, "cf.budget.lt"),
    ({"cf.seats": "2.5"}, "cf.seats"),
    ({"cf.product_interest": "coal"}, "cf.product_interest"),
    ({"cf.product_interest.gte": "solar"}, "cf.product_interest.gte"),
    ({"cf.homeowner.lt": "true"}, "cf.homeowner.lt"),
    ({"cf.note.gt": "a"}, "cf.note.gt"),
    ({"cf.callback_day": "tomorrow"}, "cf.callback_day"),
    ({"cf.budget.exists": "yes"}, "cf.budget.exists"),
    ({"cf.budget.between": "1"}, "cf.budget.between"),
    ({"cf.budget.gte.lt": "1"}, "cf.budget.gte.lt"),
    ({"cf.": "1"}, "cf."),
    ({"cf.undefined_key": "1"}, "cf.undefined_key"),
    ({"cf.product_interest.in": ",".join(["solar"] * 101)}, "cf.product_interest.in"),
    ({"cf.product_interest.in": ""}, "cf.product_interest.in"),
    ({"cf.note": "a\x00b"}, "cf.note"),
    ({"cf.budget": ["1", "2"]}, "cf.budget"),
]


@pytest.mark.parametrize(("params", "field"), BAD, ids=[str(f) for _, f in BAD])
def test_bad_filters_are_422_naming_the_parameter(
    api: Api, people: dict[str, str], params: Any, field: str
) -> None:
    for url in (CONTACTS, ELIGIBLE):
        message = assert_validation_error(api.get(url, params=params), field)
        assert message != "Unknown query parameter"  # read as a filter, and refused


def test_at_most_ten_filters_and_a_hostile_name(api: Api, people: dict[str, str]) -> None:
    many = {f"cf.budget.{op}": "1" for op in ("gte", "gt", "lte", "lt", "exists", "in")}
    many |= {f"cf.k{i}": "1" for i in range(5)}
    assert "At most 10" in assert_validation_error(api.get(CONTACTS, params=many), "cf")
    response = api.get(CONTACTS, params={"cf." + "x" * 5000: "1"})
    assert response.status_code == 422
    assert all(len(name) <= 80 for name in response.json()["details"])
    assert api.get(CONTACTS, params={"cf.no\x00te": "1"}).status_code == 422
    assert_validation_error(api.get(CONTACTS, params={"cx.budget": "1"}), "cx.budget")


def test_another_teams_definitions_are_never_used(api: Api, people: dict[str, str]) -> None:
    """The other team has no fields: our keys are undefined there, and its key is not ours."""
    other = api.get(CONTACTS, params={"cf.budget": "7500"}, key=api.other_key)
    assert_validation_error(other, "cf.budget")
    define(api, {"key": "region_code", "label": "Region", "type": "text"}, key=api.other_key)
    api.create(
        key=api.other_key, firstName="Eve", customFields={"region_code": "x", "budget": 7500}
    )
    assert_validation_error(api.get(CONTACTS, params={"cf.region_code": "x"}), "cf.region_code")
    assert names(api, {"cf.budget": "7500"}) == ["Ann"]  # Eve's 7500 is the other team's
    theirs = api.get(CONTACTS, params={"cf.region_code": "x"}, key=api.other_key).json()
    assert [c["first_name"] for c in theirs["data"]] == ["Eve"]


def test_a_deleted_definition_stops_the_filter(api: Api, people: dict[str, str]) -> None:
    response = api.client.delete("/api/crm/custom-fields/budget", headers=api.auth())
    assert response.status_code == 204, response.text
    assert_validation_error(api.get(CONTACTS, params={"cf.budget": "7500"}), "cf.budget")


def test_an_in_list_of_a_hundred_values_is_read(api: Api, people: dict[str, str]) -> None:
    """The bound is 100 values: 100 pass (and match as any of them), 101 are refused above."""
    values = ",".join(str(5000 + n) for n in range(99)) + ",12000.5"
    assert names(api, {"cf.budget.in": values}) == ["Bob", "Cat"]
    assert names(api, {"cf.budget": "5000.0", "cf.seats.gte": "10"}) == ["Bob"]
