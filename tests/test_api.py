"""The HTTP API of docs/design.md §7 through the real app, on PostgreSQL and on SQLite.

Requests go through the whole ASGI stack (body limit, auth, routing, error
mapping) with an in-process client; ``test_api_server.py`` does the same over a
socket against ``contact-sync api``. Every test runs on both databases unless it
names PostgreSQL (true concurrency needs row locks between two connections).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from contact_sync.accounts.teams import Team, create_team, issue_api_key
from contact_sync.api import create_app
from contact_sync.contacts.phones import E164_MESSAGE
from contact_sync.db.tables import api_keys
from contact_sync.settings import Settings
from tests.factories import apply_batch, call_event

CONTACTS = "/api/crm/contacts"
COMPANIES = "/api/crm/companies"
ELIGIBLE = "/api/crm/contacts/eligible"

CONTACT_FIELDS = {
    "id",
    "team_id",
    "company_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "phone_secondary",
    "job_title",
    "lead_status",
    "source",
    "timezone",
    "preferred_contact_method",
    "do_not_call",
    "notes",
    "custom_fields",
    "tags",
    "version",
    "created_at",
    "updated_at",
    "call_count",
    "last_called_at",
    "last_call_outcome",
}
CALL_FIELDS = {
    "id",
    "contact_id",
    "call_id",
    "event_id",
    "campaign_id",
    "direction",
    "outcome",
    "duration_seconds",
    "started_at",
    "ended_at",
    "phone",
    "summary",
    "recorded_at",
}
HISTORY_FIELDS = {
    "id",
    "contact_id",
    "version_before",
    "version_after",
    "source",
    "event_id",
    "call_id",
    "api_key_id",
    "occurred_at",
    "recorded_at",
    "changes",
    "skipped",
    "summary",
}


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@dataclass
class Api:
    """A client of the app, with two teams and a key for each."""

    client: TestClient
    team: Team
    key: str
    key_id: str
    other_team: Team
    other_key: str
    engine: Engine
    names: dict[str, str] = field(default_factory=dict)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def get(self, url: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.get(url, headers=self.auth(key), **kwargs)

    def json_headers(self, key: str | None = None) -> dict[str, str]:
        return {**self.auth(key), "Content-Type": "application/json"}

    def post(self, url: str, body: Any, *, key: str | None = None) -> httpx.Response:
        # json.dumps escapes what httpx's encoder refuses (a lone surrogate).
        return self.client.post(url, content=json.dumps(body), headers=self.json_headers(key))

    def patch(
        self, contact_id: str, body: Any, *, if_match: str | None = None, key: str | None = None
    ) -> httpx.Response:
        headers = self.json_headers(key)
        if if_match is not None:
            headers["If-Match"] = if_match
        return self.client.patch(
            f"{CONTACTS}/{contact_id}", content=json.dumps(body), headers=headers
        )

    def delete(self, contact_id: str, *, key: str | None = None) -> httpx.Response:
        return self.client.delete(f"{CONTACTS}/{contact_id}", headers=self.auth(key))

    def create(self, *, key: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"firstName": "Ada", "lastName": "Lovelace", **fields}
        response = self.post(CONTACTS, body, key=key)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        self.names[created["id"]] = f"{created['first_name']} {created['last_name']}"
        return created

    def company(self, name: str, *, key: str | None = None) -> dict[str, Any]:
        response = self.post(COMPANIES, {"name": name}, key=key)
        assert response.status_code == 201, response.text
        company: dict[str, Any] = response.json()
        return company

    def listed(self, params: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        """The full names on a page of the list, in order."""
        response = self.get(CONTACTS, params=params, **kwargs)
        assert response.status_code == 200, response.text
        return [f"{c['first_name']} {c['last_name']}" for c in response.json()["data"]]

    def eligible_ids(self, params: dict[str, Any], *, key: str | None = None) -> list[str]:
        response = self.get(ELIGIBLE, params=params, key=key)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["data"]]


def _client(engine: Engine, redis_url: str, **settings: Any) -> TestClient:
    # No rate limit: these tests send many requests a second with one key
    # (test_fair_share.py tests the limit).
    settings = {
        "database_url": _url(engine),
        "broker_url": redis_url,
        "api_rate_limit_per_second": 0,
        **settings,
    }
    return TestClient(create_app(Settings(**settings), engine=engine))


def _api(client: TestClient, engine: Engine, team: Team, other_team: Team) -> Api:
    with engine.begin() as conn:
        key = issue_api_key(conn, team_id=team.id)
        other = issue_api_key(conn, team_id=other_team.id)
    return Api(client, team, key.api_key, key.key_id, other_team, other.api_key, engine)


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def assert_validation_error(response: httpx.Response, field: str) -> str:
    """A 422 in the docs/design.md §7 shape naming ``field``; returns its message."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "details"}
    assert body["error"] == "Validation failed"
    assert field in body["details"], body
    message: str = body["details"][field]
    assert message
    assert not message.startswith("Value error")
    return message


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str)
    assert body["error"]
    if message is not None:
        assert body["error"] == message


# --------------------------------------------------------------------------- create and get
def test_create_answers_201_with_the_contact_in_snake_case(api: Api) -> None:
    company = api.company("Analytical Engines Ltd")
    response = api.post(
        CONTACTS,
        {
            "teamId": api.team.id,
            "companyId": company["id"],
            "firstName": "  Ada ",
            "lastName": "Lovelace",
            "email": "Ada@Example.COM",
            "phone": "(202) 555-1234",
            "phoneSecondary": "+1 415 555 2671",
            "jobTitle": "Analyst",
            "leadStatus": "Do Not Contact",
            "source": "trade-show",
            "timezone": "America/Chicago",
            "preferredContactMethod": "phone",
            "doNotCall": True,
            "notes": "Met at the expo.",
            "customFields": {"budget": 50000, "product_interest": "solar"},
            "tags": ["hot-lead", "solar", "hot-lead"],
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["etag"] == '"1"'
    contact = response.json()
    assert set(contact) == CONTACT_FIELDS
    assert contact["team_id"] == api.team.id
    assert contact["company_id"] == company["id"]
    assert contact["first_name"] == "Ada"
    assert contact["email"] == "Ada@example.com"
    assert contact["phone"] == "+12025551234"
    assert contact["phone_secondary"] == "+14155552671"
    assert contact["job_title"] == "Analyst"
    assert contact["lead_status"] == "do_not_contact"
    assert contact["source"] == "trade-show"
    assert contact["timezone"] == "America/Chicago"
    assert contact["preferred_contact_method"] == "phone"
    assert contact["do_not_call"] is True
    assert contact["notes"] == "Met at the expo."
    assert contact["custom_fields"] == {"budget": 50000, "product_interest": "solar"}
    assert contact["tags"] == ["hot-lead", "solar"]
    assert contact["version"] == 1
    assert contact["created_at"] == contact["updated_at"]
    assert datetime.fromisoformat(contact["created_at"]).tzinfo is not None


def test_create_accepts_snake_case_names_and_applies_the_defaults(api: Api) -> None:
    response = api.post(
        CONTACTS,
        {
            "team_id": api.team.id,
            "first_name": "Grace",
            "last_name": "Hopper",
            "phone_secondary": "(312) 555-0142",
            "preferred_contact_method": "email",
            "custom_fields": {"rank": "admiral"},
        },
    )
    assert response.status_code == 201, response.text
    contact = response.json()
    assert contact["phone_secondary"] == "+13125550142"
    assert contact["preferred_contact_method"] == "email"
    assert contact["custom_fields"] == {"rank": "admiral"}
    assert contact["lead_status"] == "new"
    assert contact["do_not_call"] is False
    assert contact["tags"] == []
    assert contact["phone"] is None


def test_a_create_without_team_id_goes_to_the_keys_team(api: Api) -> None:
    assert api.create()["team_id"] == api.team.id
    assert api.create(key=api.other_key)["team_id"] == api.other_team.id


def test_get_returns_the_contact_with_its_version_as_etag(api: Api) -> None:
    created = api.create(phone="(202) 555-1234")
    response = api.get(f"{CONTACTS}/{created['id']}")
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    assert response.json() == created


# --------------------------------------------------------------------------- list
def test_the_list_answers_data_total_limit_offset_newest_first(api: Api) -> None:
    first = api.create(firstName="First")
    second = api.create(firstName="Second")
    response = api.get(CONTACTS)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (2, 50, 0)
    assert [c["id"] for c in body["data"]] == [second["id"], first["id"]]
    assert all(set(c) == CONTACT_FIELDS for c in body["data"])


@pytest.fixture
def crowd(api: Api) -> Api:
    """Four contacts of the team (created oldest first) and one of the other team."""
    engines = api.company("Engines")
    navy = api.company("Navy")
    api.names["engines"] = engines["id"]
    api.names["navy"] = navy["id"]
    api.create(
        firstName="Ada",
        lastName="Lovelace",
        email="ada@example.org",
        phone="(202) 555-1234",
        companyId=engines["id"],
        leadStatus="qualified",
    )
    api.create(
        firstName="Grace",
        lastName="Hopper",
        email="grace@navy.mil",
        companyId=navy["id"],
        doNotCall=True,
        leadStatus="contacted",
    )
    api.create(firstName="Alan", lastName="Turing", phone="+1 415 555 2671")
    api.create(
        firstName="Katherine",
        lastName="Johnson",
        phone="(646) 555-0199",
        phoneSecondary="(312) 555-0142",
        leadStatus="customer",
    )
    api.create(firstName="Ada", lastName="Rival", phone="(202) 555-1234", key=api.other_key)
    return api


ALL = ["Katherine Johnson", "Alan Turing", "Grace Hopper", "Ada Lovelace"]
FILTER_CASES: list[tuple[str, str, Any, list[str], int]] = [
    # (camelCase name, snake_case name, value, names on the page, total)
    ("teamId", "team_id", "<team>", ALL, 4),
    ("companyId", "company_id", "<engines>", ["Ada Lovelace"], 1),
    ("companyId", "company_id", "<navy>", ["Grace Hopper"], 1),
    ("search", "search", "ada", ["Ada Lovelace"], 1),
    ("search", "search", "HOPPER", ["Grace Hopper"], 1),
    ("search", "search", "alan turing", ["Alan Turing"], 1),
    ("search", "search", "navy.mil", ["Grace Hopper"], 1),
    ("search", "search", "202-555-12", ["Ada Lovelace"], 1),
    ("search", "search", "(312) 555", ["Katherine Johnson"], 1),
    ("search", "search", "nobody", [], 0),
    ("leadStatus", "lead_status", "qualified", ["Ada Lovelace"], 1),
    ("leadStatus", "lead_status", "Customer", ["Katherine Johnson"], 1),
    ("doNotCall", "do_not_call", "true", ["Grace Hopper"], 1),
    ("doNotCall", "do_not_call", "false", ["Katherine Johnson", "Alan Turing", "Ada Lovelace"], 3),
    ("hasPhone", "has_phone", "true", ["Katherine Johnson", "Alan Turing", "Ada Lovelace"], 3),
    ("hasPhone", "has_phone", "false", ["Grace Hopper"], 1),
    ("limit", "limit", "2", ["Katherine Johnson", "Alan Turing"], 4),
    ("offset", "offset", "3", ["Ada Lovelace"], 4),
]


@pytest.mark.parametrize(
    ("camel", "snake", "value", "expected", "total"),
    FILTER_CASES,
    ids=[f"{c[0]}={c[2]}" for c in FILTER_CASES],
)
def test_each_list_filter_in_camel_case_and_snake_case(
    crowd: Api, camel: str, snake: str, value: str, expected: list[str], total: int
) -> None:
    value = {
        "<team>": crowd.team.id,
        "<engines>": crowd.names["engines"],
        "<navy>": crowd.names["navy"],
    }.get(value, value)
    for name in (camel, snake):
        response = crowd.get(CONTACTS, params={name: value})
        assert response.status_code == 200, response.text
        body = response.json()
        names = [f"{c['first_name']} {c['last_name']}" for c in body["data"]]
        assert names == expected, name
        assert body["total"] == total, name
        assert all(c["team_id"] == crowd.team.id for c in body["data"])


def test_filters_combine_and_total_counts_every_match_before_the_page(crowd: Api) -> None:
    params = {"hasPhone": "true", "do_not_call": "false", "limit": "1", "offset": "1"}
    response = crowd.get(CONTACTS, params=params)
    body = response.json()
    assert [c["first_name"] for c in body["data"]] == ["Alan"]
    assert (body["total"], body["limit"], body["offset"]) == (3, 1, 1)
    assert crowd.listed({"search": "ada", "leadStatus": "customer"}) == []


def test_limit_1_and_500_are_accepted(crowd: Api) -> None:
    assert crowd.get(CONTACTS, params={"limit": "1"}).json()["limit"] == 1
    assert crowd.get(CONTACTS, params={"limit": "500"}).json()["limit"] == 500


# --------------------------------------------------------------------------- patch
def test_a_patch_changes_only_the_fields_sent_and_bumps_the_version(api: Api) -> None:
    created = api.create(phone="(202) 555-1234", jobTitle="Analyst", tags=["a"])
    response = api.patch(created["id"], {"jobTitle": "Countess", "customFields": {"k": 1}})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    patched = response.json()
    assert set(patched) == CONTACT_FIELDS
    assert patched["job_title"] == "Countess"
    assert patched["custom_fields"] == {"k": 1}
    assert patched["version"] == 2
    assert patched["created_at"] == created["created_at"]
    assert patched["updated_at"] > created["updated_at"]
    unchanged = {k: v for k, v in patched.items() if k not in ("job_title", "custom_fields")}
    assert unchanged == {
        **{k: v for k, v in created.items() if k not in ("job_title", "custom_fields")},
        "version": 2,
        "updated_at": patched["updated_at"],
    }
    assert api.get(f"{CONTACTS}/{created['id']}").json() == patched


def test_a_patch_accepts_snake_case_names_and_null_clears(api: Api) -> None:
    created = api.create(phoneSecondary="(312) 555-0142", email="ada@example.org")
    response = api.patch(
        created["id"], {"phone_secondary": None, "email": None, "do_not_call": True}
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["phone_secondary"] is None
    assert patched["email"] is None
    assert patched["do_not_call"] is True


@pytest.mark.parametrize("form", ["{v}", '"{v}"', 'W/"{v}"', " {v} "])
def test_if_match_takes_a_bare_or_quoted_version(api: Api, form: str) -> None:
    created = api.create()
    ok = api.patch(created["id"], {"firstName": "Augusta"}, if_match=form.format(v=1))
    assert ok.status_code == 200, ok.text
    assert ok.json()["version"] == 2
    stale = api.patch(created["id"], {"firstName": "Ada"}, if_match=form.format(v=1))
    assert stale.status_code == 412
    assert stale.json() == {"error": "Version mismatch", "current_version": 2}
    assert stale.headers["etag"] == '"2"'


def test_a_version_mismatch_is_412_with_the_current_version_and_changes_nothing(api: Api) -> None:
    created = api.create()
    api.patch(created["id"], {"jobTitle": "Countess"})
    response = api.patch(created["id"], {"firstName": "Augusta"}, if_match="1")
    assert response.status_code == 412
    assert response.json() == {"error": "Version mismatch", "current_version": 2}
    assert response.headers["etag"] == '"2"'
    current = api.get(f"{CONTACTS}/{created['id']}").json()
    assert (current["first_name"], current["version"]) == ("Ada", 2)


def test_the_version_may_be_given_in_the_body(api: Api) -> None:
    created = api.create()
    ok = api.patch(created["id"], {"firstName": "Augusta", "version": 1})
    assert ok.status_code == 200, ok.text
    assert ok.json()["version"] == 2
    stale = api.patch(created["id"], {"firstName": "Ada", "version": 1})
    assert stale.status_code == 412
    assert stale.json() == {"error": "Version mismatch", "current_version": 2}
    assert stale.headers["etag"] == '"2"'


def test_a_patch_without_a_version_applies_to_the_latest(api: Api) -> None:
    created = api.create()
    api.patch(created["id"], {"jobTitle": "Countess"})
    response = api.patch(created["id"], {"firstName": "Augusta"})
    assert response.status_code == 200
    assert (response.json()["version"], response.json()["job_title"]) == (3, "Countess")


def test_a_no_op_patch_is_200_with_the_version_unchanged_and_no_history(api: Api) -> None:
    created = api.create(phone="(202) 555-1234", tags=["a"])
    for body in ({}, {"firstName": "Ada"}, {"phone": "+1 202 555 1234", "tags": ["a"]}):
        response = api.patch(created["id"], body, if_match="1")
        assert response.status_code == 200, response.text
        assert response.json() == created
        assert response.headers["etag"] == '"1"'
    history = api.get(f"{CONTACTS}/{created['id']}/history").json()["data"]
    assert len(history) == 1


def test_a_patch_to_another_teams_company_is_403(api: Api) -> None:
    created = api.create()
    theirs = api.company("Rival Co", key=api.other_key)
    response = api.patch(created["id"], {"companyId": theirs["id"]})
    assert_error(response, 403, "Company does not belong to this team")
    assert api.get(f"{CONTACTS}/{created['id']}").json()["company_id"] is None
    ours = api.company("Our Co")
    assert api.patch(created["id"], {"companyId": ours["id"]}).json()["company_id"] == ours["id"]


# --------------------------------------------------------------------------- delete
def test_delete_is_204_and_the_contact_is_gone(api: Api) -> None:
    created = api.create()
    response = api.delete(created["id"])
    assert response.status_code == 204
    assert response.content == b""
    assert_error(api.get(f"{CONTACTS}/{created['id']}"), 404, "Contact not found")
    assert_error(api.get(f"{CONTACTS}/{created['id']}/history"), 404)
    assert_error(api.delete(created["id"]), 404)
    assert api.get(CONTACTS).json()["total"] == 0


# --------------------------------------------------------------------------- history
def test_history_is_newest_first_with_source_versions_and_changes(api: Api) -> None:
    created = api.create(jobTitle="Analyst", customFields={"budget": 10})
    api.patch(created["id"], {"firstName": "Augusta", "jobTitle": None})
    api.patch(created["id"], {"customFields": {"budget": 20, "colour": "blue"}})
    response = api.get(f"{CONTACTS}/{created['id']}/history")
    assert response.status_code == 200
    records = response.json()["data"]
    assert all(set(r) == HISTORY_FIELDS for r in records)
    assert [(r["version_before"], r["version_after"]) for r in records] == [
        (2, 3),
        (1, 2),
        (None, 1),
    ]
    assert {r["source"] for r in records} == {"api"}
    assert {r["api_key_id"] for r in records} == {api.key_id}
    assert all(r["contact_id"] == created["id"] and r["event_id"] is None for r in records)
    assert sorted(records[0]["changes"], key=lambda c: c["field"]) == [
        {"field": "custom_fields.budget", "old": 10, "new": 20},
        {"field": "custom_fields.colour", "old": None, "new": "blue"},
    ]
    assert sorted(records[1]["changes"], key=lambda c: c["field"]) == [
        {"field": "first_name", "old": "Ada", "new": "Augusta"},
        {"field": "job_title", "old": "Analyst", "new": None},
    ]
    created_fields = {c["field"]: c for c in records[2]["changes"]}
    assert created_fields["first_name"] == {"field": "first_name", "old": None, "new": "Ada"}
    assert created_fields["job_title"]["new"] == "Analyst"
    assert records[0]["occurred_at"] >= records[1]["occurred_at"] >= records[2]["occurred_at"]


def test_history_shows_a_call_event_with_its_ids_and_summary(api: Api) -> None:
    created = api.create(phone="(202) 555-1234")
    api.patch(created["id"], {"jobTitle": "Analyst"})
    occurred = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    [outcome] = apply_batch(
        api.engine,
        [
            call_event(
                api.team.id,
                event_id="evt_api_history_1",
                call_id="call_1",
                contact_id=created["id"],
                occurred_at=occurred,
                extraction={
                    "custom_fields": {"budget": 50000},
                    "summary": "Wants a 6 kW system.",
                },
            )
        ],
    )
    assert outcome.outcome == "applied"
    records = api.get(f"{CONTACTS}/{created['id']}/history").json()["data"]
    assert [r["source"] for r in records] == ["call", "api", "api"]
    call = records[0]
    assert (call["event_id"], call["call_id"]) == ("evt_api_history_1", "call_1")
    assert (call["version_before"], call["version_after"]) == (2, 3)
    assert call["summary"] == "Wants a 6 kW system."
    assert {"field": "custom_fields.budget", "old": None, "new": 50000} in call["changes"]
    assert api.get(f"{CONTACTS}/{created['id']}").json()["custom_fields"] == {"budget": 50000}


# --------------------------------------------------------------------------- calls
def _calls_of(api: Api, contact_id: str, **params: Any) -> httpx.Response:
    return api.get(f"{CONTACTS}/{contact_id}/calls", params=params)


def test_a_new_contact_shows_no_calls(api: Api) -> None:
    created = api.create()
    assert (created["call_count"], created["last_called_at"], created["last_call_outcome"]) == (
        0,
        None,
        None,
    )
    assert _calls_of(api, created["id"]).json() == {
        "data": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }


def test_calls_are_listed_newest_first_and_counted_on_the_contact(api: Api) -> None:
    created = api.create(phone="(202) 555-1234")
    events = [
        call_event(
            api.team.id,
            minutes=minutes,
            contact_id=created["id"],
            call_id=f"call_{minutes}",
            outcome=outcome,
            duration_seconds=30,
            direction="inbound" if minutes == 2 else None,
            extraction={"summary": f"Call at {minutes}."},
        )
        for minutes, outcome in ((1, "busy"), (3, "voicemail"), (2, "completed"))
    ]
    apply_batch(api.engine, events)
    body = _calls_of(api, created["id"]).json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 50, 0)
    assert [c["call_id"] for c in body["data"]] == ["call_3", "call_2", "call_1"]
    newest = body["data"][0]
    assert set(newest) == CALL_FIELDS
    assert (newest["contact_id"], newest["outcome"], newest["direction"]) == (
        created["id"],
        "voicemail",
        "outbound",
    )
    assert (newest["phone"], newest["summary"], newest["duration_seconds"]) == (
        "+12025551234",
        "Call at 3.",
        30,
    )
    assert body["data"][1]["direction"] == "inbound"
    assert datetime.fromisoformat(newest["ended_at"]) == datetime.fromisoformat(
        events[1]["occurred_at"]
    )
    contact = api.get(f"{CONTACTS}/{created['id']}").json()
    assert (contact["call_count"], contact["last_call_outcome"]) == (3, "voicemail")
    assert contact["last_called_at"] == newest["ended_at"]
    assert contact["version"] == created["version"] + 1  # busy/voicemail change nothing
    listed = api.get(CONTACTS).json()["data"]
    assert [c["call_count"] for c in listed] == [3]


def test_a_page_of_calls_is_cut_by_limit_and_offset_with_the_total(api: Api) -> None:
    created = api.create()
    apply_batch(
        api.engine,
        [
            call_event(api.team.id, minutes=m, contact_id=created["id"], call_id=f"c{m}")
            for m in range(5)
        ],
    )
    body = _calls_of(api, created["id"], limit=2, offset=1).json()
    assert [c["call_id"] for c in body["data"]] == ["c3", "c2"]
    assert (body["total"], body["limit"], body["offset"]) == (5, 2, 1)
    assert _calls_of(api, created["id"], offset=10).json()["total"] == 5


def test_another_teams_contact_has_no_calls_to_show(api: Api) -> None:
    created = api.create()
    apply_batch(api.engine, [call_event(api.team.id, contact_id=created["id"])])
    response = api.get(f"{CONTACTS}/{created['id']}/calls", key=api.other_key)
    assert_error(response, 404)
    assert "call_" not in response.text
    assert_error(_calls_of(api, "no-such-contact"), 404)
    assert_error(_calls_of(api, "a%00b"), 404)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "-1"),
        ("limit", "0"),
        ("limit", "501"),
        ("limit", str(10**30)),
        ("limit", "ten"),
        ("offset", "\x00"),
        ("offset", "-1"),
        ("offset", str(10**30)),
    ],
)
def test_a_hostile_page_of_calls_is_422_naming_it(api: Api, name: str, value: str) -> None:
    created = api.create()
    response = _calls_of(api, created["id"], **{name: value})
    assert_validation_error(response, name)
    assert set(response.json()["details"]) == {name}


def test_an_unknown_query_parameter_of_calls_is_422(api: Api) -> None:
    created = api.create()
    assert_validation_error(_calls_of(api, created["id"], sort="ended_at"), "sort")


@pytest.mark.parametrize("name", ["call_count", "callCount", "lastCalledAt", "last_call_outcome"])
def test_the_call_fields_are_read_only_in_create_and_patch(api: Api, name: str) -> None:
    value = {"call_count": 5, "callCount": 5}.get(name, "2026-11-20T15:00:00Z")
    snake = {"callCount": "call_count", "lastCalledAt": "last_called_at"}.get(name, name)
    created = api.post(CONTACTS, {"firstName": "Ada", "lastName": "Lovelace", name: value})
    assert assert_validation_error(created, snake) == "Read-only: kept from the contact's calls"
    contact = api.create()
    patched = api.patch(contact["id"], {name: value})
    assert assert_validation_error(patched, snake) == "Read-only: kept from the contact's calls"
    assert api.get(f"{CONTACTS}/{contact['id']}").json()["version"] == 1


# --------------------------------------------------------------------------- eligible
# 2026-11-20 (a Friday) is standard time in the US: New York UTC-5, Chicago -6, Denver -7,
# LA -8. Since docs/design.md §12 the stream asks about `at` (default: now) under the team's
# policy (09:00-17:00 by default) and the 08:00-21:00 floor; the tests name `at`.
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
WEEKDAY_MORNING = "2026-11-20T15:00:00Z"  # 10:00 in New York
TOLL_FREE = "+1 800 555 0100"  # names no zone: the contact's timezone alone decides


@pytest.fixture
def callers(api: Api) -> dict[str, str]:
    """One callable contact per zone, one without a zone; contact id by zone."""
    ids = {}
    for index, zone in enumerate((*ZONES, "Asia/Tokyo")):
        ids[zone] = api.create(firstName=f"Z{index}", phone=TOLL_FREE, timezone=zone)["id"]
    ids["none"] = api.create(firstName="NoZone", phone="+1 800 555 0101")["id"]
    return ids


def _zones(api: Api, callers: dict[str, str], **params: str) -> set[str]:
    found = set(api.eligible_ids(params))
    return {zone for zone, contact_id in callers.items() if contact_id in found}


def test_eligible_answers_data_and_next_cursor(api: Api, callers: dict[str, str]) -> None:
    response = api.get(ELIGIBLE, params={"at": WEEKDAY_MORNING})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "next_cursor"}
    assert body["next_cursor"] is None
    assert all(set(c) == CONTACT_FIELDS for c in body["data"])
    # Denver (08:00), LA (07:00) and Tokyo (00:00) are outside the policy's window.
    assert {c["id"] for c in body["data"]} == {
        callers["America/New_York"],
        callers["America/Chicago"],
        callers["none"],
    }


def test_each_eligible_entry_is_what_the_contacts_own_get_answers(api: Api) -> None:
    # The stream's rows reach the response as JSON text (on PostgreSQL written by the
    # database, contacts/stream_sql.py), not through the Contact model: the same values,
    # whatever a contact holds.
    custom = {
        "unicode": "名前 ✓ Zoë \u2028",
        "nested": {"list": [1, 2.5, None, True], "deep": {"x": "y"}},
        "big": 2**63 - 1,
        "small": -(2**63),
        "tiny": 1e-300,
        "third": 0.1,
    }
    ids = [
        api.create(
            firstName="Zoë",
            lastName='O\'Brien "Quoted" back\\slash',
            phone="(202) 555-0100",
            notes="tab\tnew line\ncontrol \u0001 and \u007f end",
            timezone="America/New_York",
            customFields=custom,
            tags=["vip", "ß"],
        )["id"],
        api.create(firstName="Plain", phone="(202) 555-0101")["id"],
    ]
    response = api.get(ELIGIBLE, params={"at": WEEKDAY_MORNING})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    listed = {c["id"]: c for c in response.json()["data"]}
    assert set(listed) == set(ids)
    for contact_id in ids:
        alone = api.get(f"{CONTACTS}/{contact_id}")
        assert alone.status_code == 200
        assert listed[contact_id] == alone.json()
    assert listed[ids[0]]["custom_fields"] == custom


def test_eligible_excludes_do_not_call_phoneless_and_sticky_statuses(api: Api) -> None:
    keep = {api.create(phone="(202) 555-0100", leadStatus=s)["id"] for s in ("new", "qualified")}
    api.create(phone="(202) 555-0100", doNotCall=True)
    api.create(phoneSecondary="(202) 555-0100")  # only a secondary number
    for status in ("converted", "customer", "churned", "do_not_contact"):
        api.create(phone="(202) 555-0100", leadStatus=status)
    api.create(phone="(202) 555-0100", key=api.other_key)
    assert set(api.eligible_ids({"at": WEEKDAY_MORNING})) == keep


def test_the_window_is_read_in_each_contacts_timezone(api: Api, callers: dict[str, str]) -> None:
    # 15:00Z: New York 10:00, Chicago 09:00 (start inclusive), Denver 08:00, LA 07:00.
    assert _zones(api, callers, at="2026-11-20T15:00:00Z") == {
        "America/New_York",
        "America/Chicago",
        "none",  # the policy's default zone, America/New_York
    }
    # 22:00Z: New York 17:00 (end exclusive), Chicago 16:00, Denver 15:00, LA 14:00.
    assert _zones(api, callers, at="2026-11-20T22:00:00Z") == {
        "America/Chicago",
        "America/Denver",
        "America/Los_Angeles",
    }
    # The same instant written with another offset.
    assert _zones(api, callers, at="2026-11-20T10:00:00-05:00") == _zones(
        api, callers, at="2026-11-20T15:00:00Z"
    )


def test_a_window_whose_start_is_after_its_end_spans_midnight_inside_the_floor(
    api: Api, callers: dict[str, str]
) -> None:
    # 20:00-09:00 keeps 08:00-09:00 and 20:00-21:00 of it (the 08:00-21:00 floor).
    # 01:30Z: New York 20:30, Chicago 19:30, Denver 18:30, LA 17:30, Tokyo 10:30.
    for start, end in (("windowStart", "windowEnd"), ("window_start", "window_end")):
        evening = _zones(api, callers, at="2026-11-21T01:30:00Z", **{start: "20:00", end: "09:00"})
        assert evening == {"America/New_York", "none"}
    # 15:30Z: New York 10:30, Chicago 09:30, Denver 08:30, LA 07:30 (before the floor).
    morning = _zones(
        api, callers, at="2026-11-20T15:30:00Z", windowStart="20:00", windowEnd="09:00"
    )
    assert morning == {"America/Denver"}
    # 04:00Z: New York 23:00: inside 22:00-06:00, but never after 21:00.
    night = _zones(api, callers, at="2026-11-21T04:00:00Z", windowStart="22:00", windowEnd="06:00")
    assert night == set()


def test_contacts_without_a_timezone_use_the_default_timezone(
    api: Api, callers: dict[str, str]
) -> None:
    at = "2026-11-20T15:00:00Z"  # New York 10:00, LA 07:00, Tokyo 00:00 next day
    assert "none" in _zones(api, callers, at=at)  # default America/New_York
    assert "none" not in _zones(api, callers, at=at, defaultTimezone="America/Los_Angeles")
    assert "none" not in _zones(api, callers, at=at, default_timezone="Asia/Tokyo")
    tokyo_morning = "2026-11-20T01:00:00Z"  # 10:00 in Tokyo, 20:00 in New York
    assert _zones(api, callers, at=tokyo_morning, defaultTimezone="Asia/Tokyo") == {
        "none",
        "Asia/Tokyo",
    }
    assert _zones(api, callers, at=tokyo_morning) == {"Asia/Tokyo"}


def test_the_keyset_cursor_yields_every_eligible_contact_exactly_once(api: Api) -> None:
    expected = {api.create(firstName=f"C{i}", phone="(202) 555-0100")["id"] for i in range(23)}
    api.create(phone="(202) 555-0100", doNotCall=True)
    seen: list[str] = []
    pages = []
    params: dict[str, str] = {"limit": "5", "at": WEEKDAY_MORNING}
    while True:
        body = api.get(ELIGIBLE, params=params).json()
        pages.append(len(body["data"]))
        seen += [c["id"] for c in body["data"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": "5", "cursor": body["next_cursor"]}  # the cursor carries `at`
    assert pages == [5, 5, 5, 5, 3]
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == expected


def test_the_keyset_cursor_is_stable_while_contacts_change(api: Api) -> None:
    ids = [api.create(firstName=f"C{i}", phone="(202) 555-0100")["id"] for i in range(6)]
    first = api.get(ELIGIBLE, params={"limit": "3", "at": WEEKDAY_MORNING}).json()
    assert [c["id"] for c in first["data"]] == ids[:3]
    api.delete(ids[3])  # not yet seen: gone
    api.patch(ids[0], {"jobTitle": "Changed"})  # seen: not seen again
    late = api.create(firstName="Late", phone="(202) 555-0100")["id"]  # new: at the end
    rest = api.get(ELIGIBLE, params={"limit": "3", "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in rest["data"]] == [*ids[4:], late]
    assert rest["next_cursor"] is None


# --------------------------------------------------------------------------- companies
def test_companies_are_created_and_listed_per_team(api: Api) -> None:
    response = api.post(COMPANIES, {"teamId": api.team.id, "name": "  Zeta Solar "})
    assert response.status_code == 201, response.text
    zeta = response.json()
    assert set(zeta) == {"id", "team_id", "name", "created_at", "updated_at"}
    assert (zeta["team_id"], zeta["name"]) == (api.team.id, "Zeta Solar")
    alpha = api.company("Alpha Roofing")
    api.company("Rival Co", key=api.other_key)
    for params in ({}, {"teamId": api.team.id}, {"team_id": api.team.id}):
        listed = api.get(COMPANIES, params=params)
        assert listed.status_code == 200
        assert listed.json() == {"data": [alpha, zeta], "total": 2, "limit": 50, "offset": 0}


def test_a_contact_of_a_company_gets_its_id_and_another_teams_company_is_403(api: Api) -> None:
    ours = api.company("Ours")
    assert api.create(companyId=ours["id"])["company_id"] == ours["id"]
    theirs = api.company("Theirs", key=api.other_key)
    for name in ("companyId", "company_id"):
        response = api.post(CONTACTS, {"firstName": "A", "lastName": "B", name: theirs["id"]})
        assert_error(response, 403, "Company does not belong to this team")
    assert api.get(CONTACTS).json()["total"] == 1


def test_an_unknown_company_is_422_naming_company_id(api: Api) -> None:
    response = api.post(CONTACTS, {"firstName": "A", "lastName": "B", "companyId": "nope"})
    assert_validation_error(response, "company_id")


# --------------------------------------------------------------------------- health, openapi
def test_healthz_and_readyz_need_no_key(api: Api) -> None:
    health = api.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok"},
        "queue_depth": 0,
    }


def test_readyz_is_503_naming_an_unreachable_broker(engine: Engine, redis_url: str) -> None:
    with _client(engine, redis_url, broker_url="redis://127.0.0.1:1/0") as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")


def test_the_openapi_document_describes_every_endpoint(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert operations == {
        ("POST", CONTACTS),
        ("GET", CONTACTS),
        ("POST", f"{CONTACTS}/upsert"),
        ("POST", f"{CONTACTS}/batch/upsert"),
        ("GET", ELIGIBLE),
        ("GET", f"{CONTACTS}/{{contact_id}}"),
        ("PATCH", f"{CONTACTS}/{{contact_id}}"),
        ("DELETE", f"{CONTACTS}/{{contact_id}}"),
        ("GET", f"{CONTACTS}/{{contact_id}}/history"),
        ("GET", f"{CONTACTS}/{{contact_id}}/calls"),
        ("GET", f"{CONTACTS}/{{contact_id}}/eligibility"),
        ("POST", COMPANIES),
        ("GET", COMPANIES),
        ("GET", "/api/crm/dead-letters"),
        ("GET", "/api/crm/dead-letters/{dead_letter_id}"),
        ("POST", "/api/crm/dead-letters/{dead_letter_id}/replay"),
        ("POST", "/api/crm/dead-letters/{dead_letter_id}/discard"),
        ("GET", f"{COMPANIES}/{{company_id}}"),
        ("PATCH", f"{COMPANIES}/{{company_id}}"),
        ("DELETE", f"{COMPANIES}/{{company_id}}"),
        ("GET", "/api/crm/calling-policy"),
        ("PUT", "/api/crm/calling-policy"),
        ("GET", "/api/crm/calling-policy/history"),
        ("POST", "/api/crm/custom-fields"),
        ("GET", "/api/crm/custom-fields"),
        ("GET", "/api/crm/custom-fields/schema"),
        ("GET", "/api/crm/custom-fields/{key}"),
        ("PATCH", "/api/crm/custom-fields/{key}"),
        ("DELETE", "/api/crm/custom-fields/{key}"),
        ("GET", "/api/crm/team-settings"),
        ("PUT", "/api/crm/team-settings"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }
    listing = doc["paths"][CONTACTS]["get"]
    assert [p["name"] for p in listing["parameters"]] == [
        "teamId",
        "companyId",
        "search",
        "leadStatus",
        "doNotCall",
        "hasPhone",
        "tag",
        "sort",
        "limit",
        "offset",
    ]
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 500, 50)
    eligible = {p["name"]: p["schema"] for p in doc["paths"][ELIGIBLE]["get"]["parameters"]}
    assert set(eligible) == {
        "teamId",
        "at",
        "windowStart",
        "windowEnd",
        "defaultTimezone",
        "limit",
        "cursor",
    }
    assert "default" not in eligible["windowStart"]  # the team's policy decides
    assert "policy" in eligible["windowStart"]["description"]
    assert eligible["limit"]["maximum"] == 1000
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create_body = doc["paths"][CONTACTS]["post"]["requestBody"]["content"]["application/json"]
    assert {"firstName", "phoneSecondary", "customFields"} <= set(
        create_body["schema"]["properties"]
    )
    patch = doc["paths"][f"{CONTACTS}/{{contact_id}}"]["patch"]
    assert {"412", "422", "404", "401"} <= set(patch["responses"])
    error_ref = "#/components/schemas/ErrorBody"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if status.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": error_ref}, (method, path, status)
            if path.startswith("/api/"):
                assert op["security"] == [{"HTTPBearer": []}]
                assert "401" in op["responses"]


# --------------------------------------------------------------------------- 401
def _requests(contact_id: str) -> list[tuple[str, str, Any]]:
    """(method, url, body) for every endpoint that needs a key."""
    return [
        ("POST", CONTACTS, {"firstName": "A", "lastName": "B"}),
        ("GET", CONTACTS, None),
        ("GET", ELIGIBLE, None),
        ("GET", f"{CONTACTS}/{contact_id}", None),
        ("PATCH", f"{CONTACTS}/{contact_id}", {"firstName": "X"}),
        ("DELETE", f"{CONTACTS}/{contact_id}", None),
        ("GET", f"{CONTACTS}/{contact_id}/history", None),
        ("GET", f"{CONTACTS}/{contact_id}/eligibility", None),
        ("POST", COMPANIES, {"name": "Co"}),
        ("GET", COMPANIES, None),
        ("GET", f"{COMPANIES}/{contact_id}", None),
        ("PATCH", f"{COMPANIES}/{contact_id}", {"name": "Co"}),
        ("DELETE", f"{COMPANIES}/{contact_id}", None),
    ]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer cs_wrong", "Bearer ", "Basic dXNlcjpwYXNz", "cs_no_scheme", "Bearer <key>x"],
)
def test_every_endpoint_is_401_without_a_valid_key(api: Api, authorization: str | None) -> None:
    contact = api.create()
    for method, url, body in _requests(contact["id"]):
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization.replace("<key>", api.key)
        response = api.client.request(method, url, json=body, headers=headers)
        assert_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    # Nothing was written.
    assert api.get(f"{CONTACTS}/{contact['id']}").json() == contact
    assert api.get(COMPANIES).json()["data"] == []


def test_a_revoked_key_is_401(api: Api) -> None:
    assert api.get(CONTACTS).status_code == 200
    with api.engine.begin() as conn:
        conn.execute(update(api_keys).values(revoked_at=datetime.now(UTC)))
    assert_error(api.get(CONTACTS), 401, "Invalid API key")


# --------------------------------------------------------------------------- 403 and 404
@pytest.mark.parametrize("name", ["teamId", "team_id"])
def test_another_teams_id_in_a_query_is_403(api: Api, name: str) -> None:
    for url in (CONTACTS, ELIGIBLE, COMPANIES):
        assert_error(api.get(url, params={name: api.other_team.id}), 403)
        assert_error(api.get(url, params={name: "no-such-team"}), 403)
        assert api.get(url, params={name: api.team.id}).status_code == 200


@pytest.mark.parametrize("name", ["teamId", "team_id"])
def test_another_teams_id_in_a_body_is_403(api: Api, name: str) -> None:
    contact = {"firstName": "A", "lastName": "B", name: api.other_team.id}
    assert_error(api.post(CONTACTS, contact), 403)
    assert_error(api.post(COMPANIES, {"name": "Co", name: api.other_team.id}), 403)
    assert api.get(CONTACTS, key=api.other_key).json()["total"] == 0
    assert api.get(COMPANIES, key=api.other_key).json()["data"] == []


def test_another_teams_contact_is_404_everywhere_and_stays_untouched(api: Api) -> None:
    theirs = api.create(firstName="Rival", key=api.other_key)
    url = f"{CONTACTS}/{theirs['id']}"
    assert_error(api.get(url), 404, "Contact not found")
    assert_error(api.get(f"{url}/history"), 404, "Contact not found")
    assert_error(api.patch(theirs["id"], {"firstName": "Mine"}), 404, "Contact not found")
    assert_error(api.patch(theirs["id"], {"firstName": "Mine"}, if_match="1"), 404)
    assert_error(api.delete(theirs["id"]), 404, "Contact not found")
    assert api.get(url, key=api.other_key).json() == theirs


@pytest.mark.parametrize("contact_id", ["01a00000-0000-7000-8000-000000000000", "nope", "%00"])
def test_an_unknown_contact_is_404(api: Api, contact_id: str) -> None:
    url = f"{CONTACTS}/{contact_id}"
    assert_error(api.get(url), 404, "Contact not found")
    assert_error(api.get(f"{url}/history"), 404)
    assert_error(api.client.patch(url, json={"firstName": "X"}, headers=api.auth()), 404)
    assert_error(api.client.delete(url, headers=api.auth()), 404)


def test_two_teams_with_two_keys_never_see_each_other(api: Api) -> None:
    mine = api.create(firstName="Mine", phone="(202) 555-1234", email="same@example.org")
    theirs = api.create(
        firstName="Theirs", phone="(202) 555-1234", email="same@example.org", key=api.other_key
    )
    my_company = api.company("Shared Name")
    their_company = api.company("Shared Name", key=api.other_key)
    for key, own, other, company, foreign_company in (
        (api.key, mine, theirs, my_company, their_company),
        (api.other_key, theirs, mine, their_company, my_company),
    ):
        for params in ({}, {"search": "202555"}, {"search": "same@"}, {"hasPhone": "true"}):
            body = api.get(CONTACTS, params=params, key=key).json()
            assert [c["id"] for c in body["data"]] == [own["id"]]
            assert body["total"] == 1
        for params in ({"at": "2026-11-20T15:00:00Z"}, {"at": "2026-11-20T20:00:00Z"}):
            assert api.eligible_ids(params, key=key) == [own["id"]]
        assert api.get(COMPANIES, key=key).json()["data"] == [company]
        assert (
            api.get(CONTACTS, params={"companyId": foreign_company["id"]}, key=key).json()["total"]
            == 0
        )
        assert api.get(f"{CONTACTS}/{own['id']}", key=key).status_code == 200
        assert api.get(f"{CONTACTS}/{other['id']}", key=key).status_code == 404
        assert api.get(f"{CONTACTS}/{other['id']}/history", key=key).status_code == 404
        assert api.patch(other["id"], {"notes": "x"}, key=key).status_code == 404
        assert api.delete(other["id"], key=key).status_code == 404
    assert api.get(f"{CONTACTS}/{theirs['id']}", key=api.other_key).json() == theirs
    assert api.get(f"{CONTACTS}/{mine['id']}").json() == mine


# --------------------------------------------------------------------------- 413
@pytest.fixture
def small_api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url, api_max_body_bytes=1024) as client:
        yield _api(client, engine, team, other_team)


def test_a_body_over_the_limit_is_413(small_api: Api) -> None:
    api = small_api
    contact = api.create(notes="x" * 800)  # under the limit
    big = {"firstName": "A", "lastName": "B", "notes": "x" * 1100}
    assert_error(api.post(CONTACTS, big), 413, "Request body too large")
    assert_error(api.patch(contact["id"], {"notes": "x" * 1100}), 413)
    assert_error(api.post(COMPANIES, {"name": "x" * 1100}), 413)
    assert api.get(CONTACTS).json()["total"] == 1
    assert api.get(f"{CONTACTS}/{contact['id']}").json()["version"] == 1


def test_a_streamed_body_without_a_length_is_cut_at_the_limit(small_api: Api) -> None:
    api = small_api
    chunks = [b'{"firstName": "A", "lastName": "B", "notes": "', b"x" * 600, b"x" * 600, b'"}']
    response = api.client.post(
        CONTACTS,
        content=iter(chunks),
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "Request body too large")
    assert api.get(CONTACTS).json()["total"] == 0


def test_the_default_limit_is_one_mebibyte(api: Api) -> None:
    big = {"firstName": "A", "lastName": "B", "notes": "x" * (1024 * 1024)}
    assert_error(api.post(CONTACTS, big), 413, "Request body too large")


# --------------------------------------------------------------------------- 422
BODY_ERRORS: list[tuple[dict[str, Any], str, str | None]] = [
    ({"phone": "12345"}, "phone", E164_MESSAGE),
    ({"phone": "not a phone"}, "phone", E164_MESSAGE),
    ({"phoneSecondary": "+1 202"}, "phone_secondary", E164_MESSAGE),
    ({"phone_secondary": "abc"}, "phone_secondary", E164_MESSAGE),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone", None),
    ({"email": "not-an-email"}, "email", None),
    ({"email": "a@"}, "email", None),
    ({"firstName": "   "}, "first_name", None),
    ({"firstName": "x" * 101}, "first_name", None),
    ({"lastName": 5}, "last_name", None),
    ({"doNotCall": "maybe"}, "do_not_call", None),
    ({"leadStatus": "!!!"}, "lead_status", None),
    ({"tags": "solar"}, "tags", None),
    ({"customFields": {"bad key!": 1}}, "custom_fields", None),
    ({"notes": "x" * 10_001}, "notes", None),
    ({"nickname": "Ada"}, "nickname", "Unknown field"),
    ({"notes": "\ud800"}, "notes", "Must be valid Unicode text"),
    ({"jobTitle": "a\x00b"}, "job_title", "Must not contain NUL characters"),
    ({"companyId": 7}, "company_id", None),
    ({"teamId": 7}, "team_id", None),
]


@pytest.mark.parametrize(
    ("fields", "field", "message"), BODY_ERRORS, ids=[c[1] for c in BODY_ERRORS]
)
def test_an_invalid_create_is_422_naming_the_snake_case_field(
    api: Api, fields: dict[str, Any], field: str, message: str | None
) -> None:
    body = {"firstName": "Ada", "lastName": "Lovelace", **fields}
    response = api.post(CONTACTS, body)
    got = assert_validation_error(response, field)
    assert set(response.json()["details"]) == {field}
    if message is not None:
        assert got == message
    assert api.get(CONTACTS).json()["total"] == 0


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [c for c in BODY_ERRORS if c[1] != "team_id"],
    ids=[c[1] for c in BODY_ERRORS if c[1] != "team_id"],
)
def test_an_invalid_patch_is_422_naming_the_snake_case_field_and_changes_nothing(
    api: Api, fields: dict[str, Any], field: str, message: str | None
) -> None:
    created = api.create()
    response = api.patch(created["id"], fields)
    got = assert_validation_error(response, field)
    if message is not None:
        assert got == message
    assert api.get(f"{CONTACTS}/{created['id']}").json() == created


def test_a_phone_422_names_the_region_whose_national_numbers_the_team_accepts(
    api: Api,
) -> None:
    with api.engine.begin() as conn:
        team = create_team(conn, name="Berlin Solar", region="DE")
        key = issue_api_key(conn, team_id=team.id).api_key
    body = {"firstName": "Ada", "lastName": "Lovelace", "phone": "12"}
    message = assert_validation_error(api.post(CONTACTS, body, key=key), "phone")
    assert message == (
        "Phone must be in E.164 format (+12025551234) or a national number of the team's region DE"
    )
    created = api.create(key=key, phone="030 1234567")  # what the message says is accepted
    assert created["phone"] == "+49301234567"
    patched = api.patch(created["id"], {"phoneSecondary": "12"}, key=key)
    assert assert_validation_error(patched, "phone_secondary") == message


def test_a_missing_or_null_name_is_422_naming_it(api: Api) -> None:
    assert_validation_error(api.post(CONTACTS, {"lastName": "L"}), "first_name")
    missing = api.post(CONTACTS, {})
    assert set(missing.json()["details"]) == {"first_name", "last_name"}
    created = api.create()
    assert_validation_error(api.patch(created["id"], {"firstName": None}), "first_name")


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"\xff\xfe", "body"),
        (b"[1, 2]", "body"),
        (b'"text"', "body"),
        (b"[" * 5000 + b"]" * 5000, "body"),
        (b'{"firstName": "A", "lastName": "B", "customFields": {"x": NaN}}', "custom_fields"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_422(api: Api, content: bytes, field: str) -> None:
    headers = {**api.auth(), "Content-Type": "application/json"}
    created = api.create()
    for method, url in (
        ("POST", CONTACTS),
        ("PATCH", f"{CONTACTS}/{created['id']}"),
        ("POST", COMPANIES),
    ):
        response = api.client.request(method, url, content=content, headers=headers)
        if field == "custom_fields" and url == COMPANIES:
            continue  # a company ignores fields it does not know
        assert_validation_error(response, field)


QUERY_ERRORS: list[tuple[str, dict[str, str], str]] = [
    (CONTACTS, {"limit": "0"}, "limit"),
    (CONTACTS, {"limit": "501"}, "limit"),
    (CONTACTS, {"limit": "ten"}, "limit"),
    (CONTACTS, {"offset": "-1"}, "offset"),
    (CONTACTS, {"doNotCall": "maybe"}, "do_not_call"),
    (CONTACTS, {"do_not_call": "1"}, "do_not_call"),
    (CONTACTS, {"hasPhone": "yes"}, "has_phone"),
    (CONTACTS, {"leadStatus": "!!"}, "lead_status"),
    (CONTACTS, {"search": "x" * 201}, "search"),
    (CONTACTS, {"search": "a\x00"}, "search"),
    (ELIGIBLE, {"cursor": "garbage!"}, "cursor"),
    (ELIGIBLE, {"cursor": "AA"}, "cursor"),  # base64 of a NUL byte
    (ELIGIBLE, {"cursor": "Zm9v="}, "cursor"),  # padded: not as issued
    (ELIGIBLE, {"at": "2026-11-20T15:00:00"}, "at"),
    (ELIGIBLE, {"at": "tomorrow"}, "at"),
    (ELIGIBLE, {"at": "0001-01-01T00:00:00Z"}, "at"),
    (ELIGIBLE, {"at": "9999-12-31T23:59:59-05:00"}, "at"),
    (ELIGIBLE, {"windowStart": "9am"}, "window_start"),
    (ELIGIBLE, {"window_end": "24:00"}, "window_end"),
    (ELIGIBLE, {"defaultTimezone": "Mars/Olympus_Mons"}, "default_timezone"),
    (ELIGIBLE, {"limit": "0"}, "limit"),
    (ELIGIBLE, {"limit": "1001"}, "limit"),
]


@pytest.mark.parametrize(
    ("url", "params", "field"),
    QUERY_ERRORS,
    ids=[f"{u.rsplit('/', 1)[-1]}-{next(iter(p.items()))}" for u, p, _ in QUERY_ERRORS],
)
def test_an_invalid_query_parameter_is_422_naming_it(
    api: Api, url: str, params: dict[str, str], field: str
) -> None:
    response = api.get(url, params=params)
    assert_validation_error(response, field)
    assert set(response.json()["details"]) == {field}


def test_a_limit_is_never_clamped(api: Api) -> None:
    for limit in ("0", "501", "-5", "100000"):
        assert api.get(CONTACTS, params={"limit": limit}).status_code == 422


@pytest.mark.parametrize("if_match", ["abc", '"x"', "1.5", "-1", "1234567890", '"1", "2"'])
def test_a_malformed_if_match_is_422_naming_if_match(api: Api, if_match: str) -> None:
    created = api.create()
    response = api.patch(created["id"], {"firstName": "X"}, if_match=if_match)
    assert_validation_error(response, "if_match")
    assert api.get(f"{CONTACTS}/{created['id']}").json()["version"] == 1


def test_an_if_match_of_digits_that_are_not_ascii_is_422_not_500(api: Api) -> None:
    # "²" is a digit to str.isdigit() but not to int(). A server passes such a byte
    # (obs-text, read as latin-1) to the app as it came; TestClient would re-encode
    # it as UTF-8, so this request goes through httpx's ASGI transport instead.
    created = api.create()

    async def patch(if_match: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {**api.json_headers(), "If-Match": if_match}
            url = f"{CONTACTS}/{created['id']}"
            return await client.patch(url, content=b'{"firstName": "X"}', headers=headers)

    for if_match in (b"\xb2", b'"\xb9"', b'W/"\xb3"'):
        assert_validation_error(asyncio.run(patch(if_match)), "if_match")
    assert api.get(f"{CONTACTS}/{created['id']}").json()["version"] == 1


def test_a_company_needs_a_name(api: Api) -> None:
    assert_validation_error(api.post(COMPANIES, {}), "name")
    assert_validation_error(api.post(COMPANIES, {"name": "  "}), "name")
    assert_validation_error(api.post(COMPANIES, {"name": 5}), "name")
    assert_validation_error(api.post(COMPANIES, {"name": "a\x00b"}), "name")
    assert_validation_error(api.post(COMPANIES, {"name": "Co", "teamId": 5}), "team_id")
    assert api.get(COMPANIES).json()["data"] == []


def test_unsupported_methods_and_unknown_paths_answer_in_the_error_shape(api: Api) -> None:
    response = api.client.put(CONTACTS, json={}, headers=api.auth())
    assert_error(response, 405)
    assert "POST" in response.headers["allow"]
    assert_error(api.get("/api/crm/nothing-here"), 404)


# --------------------------------------------------------------------------- concurrency
@pytest.fixture
def pg_api(pg_engine: Engine, redis_url: str) -> Api:
    """An API on PostgreSQL whose client is used from one thread only (see ``_clients``)."""
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Concurrent")
        other = create_team(conn, name="Other")
    return _api(_client(pg_engine, redis_url), pg_engine, team, other)


def _race(api: Api, calls: list[tuple[str, dict[str, Any], str | None]]) -> list[httpx.Response]:
    """Send the PATCHes at the same moment, each from its own thread and client.

    A TestClient outside ``with`` runs each request on its own event loop in
    the calling thread, so the requests really overlap in the database.
    """
    barrier = threading.Barrier(len(calls))
    answers: list[httpx.Response | None] = [None] * len(calls)

    def run(index: int, contact_id: str, body: dict[str, Any], if_match: str | None) -> None:
        client = TestClient(api.client.app)
        headers = api.auth()
        if if_match is not None:
            headers["If-Match"] = if_match
        barrier.wait()
        answers[index] = client.patch(f"{CONTACTS}/{contact_id}", json=body, headers=headers)

    threads = [
        threading.Thread(target=run, args=(i, cid, body, im))
        for i, (cid, body, im) in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def test_two_clients_patching_the_same_version_one_wins_one_gets_412_nothing_lost(
    pg_api: Api,
) -> None:
    api = pg_api
    contact = api.create()
    for round_ in range(5):
        version = api.get(f"{CONTACTS}/{contact['id']}").json()["version"]
        a, b = _race(
            api,
            [
                (contact["id"], {"jobTitle": f"A{round_}"}, str(version)),
                (contact["id"], {"notes": f"B{round_}"}, f'"{version}"'),
            ],
        )
        assert sorted([a.status_code, b.status_code]) == [200, 412], (a.text, b.text)
        winner, loser = (a, b) if a.status_code == 200 else (b, a)
        assert winner.json()["version"] == version + 1
        assert loser.json() == {"error": "Version mismatch", "current_version": version + 1}
        assert loser.headers["etag"] == f'"{version + 1}"'
        # The loser re-reads and retries: its change lands on top of the winner's.
        retry_body = json.loads(loser.request.content)
        retry = api.patch(contact["id"], retry_body, if_match=str(version + 1))
        assert retry.status_code == 200
        final = retry.json()
        assert (final["job_title"], final["notes"]) == (f"A{round_}", f"B{round_}")
        assert final["version"] == version + 2
    history = api.get(f"{CONTACTS}/{contact['id']}/history").json()["data"]
    assert [r["version_after"] for r in history] == list(range(11, 0, -1))


def test_concurrent_patches_without_a_version_both_apply(pg_api: Api) -> None:
    api = pg_api
    contact = api.create()
    answers = _race(
        api,
        [
            (contact["id"], {"jobTitle": "Engineer"}, None),
            (contact["id"], {"notes": "Call after 5"}, None),
            (contact["id"], {"tags": ["vip"]}, None),
        ],
    )
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert sorted(a.json()["version"] for a in answers) == [2, 3, 4]
    final = api.get(f"{CONTACTS}/{contact['id']}").json()
    assert (final["job_title"], final["notes"], final["tags"]) == (
        "Engineer",
        "Call after 5",
        ["vip"],
    )
    assert final["version"] == 4
