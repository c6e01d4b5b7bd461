"""``POST /api/crm/contacts/upsert`` and ``/contacts/batch/upsert`` (docs/design.md §14), on
PostgreSQL and SQLite: statuses and codes, matching, 409s with the contacts' ids, the team
setting ``duplicate_phones`` on every write route, batches with bad items, hostile bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.db.tables import contacts
from tests.factories import contact_row, make_contact
from tests.test_api import CONTACTS, Api, _api, _client, assert_error, assert_validation_error

UPSERT = f"{CONTACTS}/upsert"
BATCH = f"{CONTACTS}/batch/upsert"
SETTINGS = "/api/crm/team-settings"
ADA = {"firstName": "Ada", "lastName": "Lovelace"}


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def reject_duplicates(api: Api) -> None:
    response = api.client.put(
        SETTINGS, json={"duplicatePhones": "reject"}, headers=api.json_headers()
    )
    assert response.status_code == 200, response.text
    assert response.json()["duplicate_phones"] == "reject"


def team_count(api: Api, team: Team) -> int:
    with api.engine.connect() as conn:
        stmt = select(func.count()).select_from(contacts).where(contacts.c.team_id == team.id)
        return conn.execute(stmt).scalar_one()


def test_upsert_creates_201_then_updates_200_then_a_no_op_keeps_the_version(api: Api) -> None:
    created = api.post(UPSERT, {**ADA, "phone": "(202) 555-1234"})
    assert created.status_code == 201, created.text
    assert created.json()["phone"] == "+12025551234"
    assert created.headers["ETag"] == '"1"'
    updated = api.post(UPSERT, {**ADA, "phone": "+12025551234", "jobTitle": "CTO"})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["id"], updated.json()["version"]) == (created.json()["id"], 2)
    same = api.post(UPSERT, {**ADA, "phone": "+12025551234", "jobTitle": "CTO"})
    assert same.status_code == 200
    assert same.json()["version"] == 2
    history = api.get(f"{CONTACTS}/{created.json()['id']}/history").json()["data"]
    assert [record["version_after"] for record in history] == [2, 1]
    assert {record["api_key_id"] for record in history} == {api.key_id}


def test_match_on_in_either_spelling_decides_the_key(api: Api) -> None:
    by_phone = make_contact(api.engine, api.team.id, phone="+12025551234")
    by_email = make_contact(api.engine, api.team.id, email="grace@example.com")
    by_email_first = api.post(
        UPSERT, {**ADA, "email": "GRACE@example.com", "jobTitle": "CTO", "match_on": ["email"]}
    )
    assert by_email_first.json()["id"] == by_email.id
    by_phone_only = api.post(
        UPSERT, {**ADA, "phone": "+12025551234", "email": "new@example.com", "matchOn": ["phone"]}
    )
    assert by_phone_only.json()["id"] == by_phone.id


def test_an_ambiguous_match_is_409_with_the_contacts_ids(api: Api) -> None:
    one = make_contact(api.engine, api.team.id, phone="+12025551234")
    two = make_contact(api.engine, api.team.id, phone_secondary="+12025551234")
    response = api.post(UPSERT, {**ADA, "phone": "+12025551234"})
    assert response.status_code == 409, response.text
    assert response.json() == {"error": "Ambiguous match", "contact_ids": sorted([one.id, two.id])}


def test_another_teams_contact_is_never_matched_nor_changed(api: Api) -> None:
    theirs = make_contact(api.engine, api.other_team.id, phone="+12025551234")
    response = api.post(UPSERT, {**ADA, "phone": "+12025551234", "jobTitle": "Spy"})
    assert response.status_code == 201
    assert response.json()["id"] != theirs.id
    assert contact_row(api.engine, theirs.id).job_title is None
    forbidden = api.post(UPSERT, {**ADA, "teamId": api.other_team.id})
    assert_error(forbidden, 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ADA, "matchOn": ["name"]}, "match_on"),
        ({**ADA, "matchOn": "phone"}, "match_on"),
        ({**ADA, "matchOn": []}, "match_on"),
        ({"firstName": "Ada"}, "last_name"),
        ({**ADA, "phone": "12"}, "phone"),
        ({**ADA, "notes": "a\x00b"}, "notes"),
        ({**ADA, "jobTitle": "x" * 500_000}, "job_title"),
        ({**ADA, "doNotCall": "no"}, "do_not_call"),
        ({**ADA, "bogus": 1}, "bogus"),
        (["not", "an", "object"], "body"),
    ],
)
def test_hostile_upserts_are_422_naming_the_field(api: Api, body: Any, field: str) -> None:
    assert_validation_error(api.post(UPSERT, body), field)
    assert team_count(api, api.team) == 0


# --- duplicate_phones ---------------------------------------------------------------


def test_with_reject_every_write_route_refuses_another_contacts_number(api: Api) -> None:
    known = make_contact(api.engine, api.team.id, phone="+12025551234")
    other = make_contact(api.engine, api.team.id, phone="+12025550001")
    reject_duplicates(api)
    expected = {"error": "Duplicate phone", "contact_ids": [known.id]}
    created = api.post(CONTACTS, {**ADA, "phoneSecondary": "(202) 555-1234"})
    assert (created.status_code, created.json()) == (409, expected)
    patched = api.patch(other.id, {"phone": "+12025551234"})
    assert (patched.status_code, patched.json()) == (409, expected)
    upserted = api.post(UPSERT, {**ADA, "email": "x@example.com", "phoneSecondary": "+12025551234"})
    assert (upserted.status_code, upserted.json()) == (409, expected)
    batch = api.post(BATCH, {"items": [{**ADA, "phoneSecondary": "+12025551234"}]})
    [item] = batch.json()["data"]
    assert item["status"] == "failed"
    assert item["errors"][0]["field"] == "phone_secondary"
    assert known.id in item["errors"][0]["message"]
    assert team_count(api, api.team) == 2


def test_allow_is_the_default_and_keeps_accepting_shared_numbers(api: Api) -> None:
    make_contact(api.engine, api.team.id, phone="+12025551234")
    assert api.get(SETTINGS).json()["duplicate_phones"] == "allow"
    assert api.post(CONTACTS, {**ADA, "phone": "+12025551234"}).status_code == 201


def test_another_teams_numbers_are_no_duplicates(api: Api) -> None:
    make_contact(api.engine, api.other_team.id, phone="+12025551234")
    reject_duplicates(api)
    assert api.post(CONTACTS, {**ADA, "phone": "+12025551234"}).status_code == 201


# --- batch --------------------------------------------------------------------------


def test_a_batch_of_500_with_bad_items_reports_each_in_order(api: Api) -> None:
    items: list[Any] = [{**ADA, "phone": f"+1202555{i:04d}"} for i in range(500)]
    items[10] = {**ADA, "phone": "bad"}
    items[20] = {"lastName": "Nameless"}
    items[30] = 42
    items[40] = {**ADA, "teamId": api.other_team.id}
    items[50] = {**ADA, "phone": "+12025550001", "jobTitle": "CTO"}  # repeats item 1
    response = api.post(BATCH, {"items": items, "matchOn": ["phone"]})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(500))
    failed = {item["index"]: item["errors"] for item in data if item["status"] == "failed"}
    assert sorted(failed) == [10, 20, 30, 40]
    assert failed[10][0]["field"] == "phone"
    assert failed[20] == [{"field": "first_name", "message": "Field required"}]
    assert failed[30][0]["field"] == "body"
    assert failed[40][0]["field"] == "team_id"
    assert data[50]["status"] == "updated"
    assert data[50]["contact_id"] == data[1]["contact_id"]
    assert all(item["errors"] == [] for item in data if item["status"] != "failed")
    assert team_count(api, api.team) == 495
    again = api.post(BATCH, {"items": items, "matchOn": ["phone"]}).json()["data"]
    # item 1 sends no title after item 50 set CTO: as a patch, it leaves the title alone
    assert {item["status"] for item in again} == {"unchanged", "failed"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [ADA] * 501}, "items"),
        ({"items": "all"}, "items"),
        ({}, "items"),
        ({"items": [ADA], "matchOn": ["fax"]}, "match_on"),
        ({"items": [ADA], "teamId": "x"}, "teamId"),
        ([ADA], "body"),
    ],
)
def test_hostile_batches_are_422_naming_the_field(api: Api, body: Any, field: str) -> None:
    assert_validation_error(api.post(BATCH, body), field)
    assert team_count(api, api.team) == 0


def test_a_read_key_may_not_upsert(api: Api) -> None:
    from tests.factories import make_key

    read = make_key(api.engine, api.team.id, scope="read").api_key
    assert_error(api.post(UPSERT, ADA, key=read), 403)
    assert_error(api.post(BATCH, {"items": [ADA]}, key=read), 403)


def test_unstorable_text_in_one_item_fails_that_item_alone(api: Api) -> None:
    raw = (
        '{"items": ['
        '{"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"},'
        r'{"firstName": "Eve", "lastName": "L", "notes": "a\u0000b"},'
        r'{"firstName": "Eve", "lastName": "L", "tags": ["\ud800"]},'
        r'{"firstName": "Eve", "lastName": "L", "bad\u0000key": 1},'
        '{"firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com"}'
        '], "matchOn": ["email"]}'
    )
    response = api.client.post(BATCH, content=raw.encode(), headers=api.json_headers())
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["status"] for item in data] == ["created", "failed", "failed", "failed", "created"]
    assert [item["errors"][0]["field"] for item in data[1:4]] == ["notes", "tags", "body"]
    assert [item["index"] for item in data] == [0, 1, 2, 3, 4]
    assert team_count(api, api.team) == 2
    outer = r'{"items": [{"firstName": "Ada", "lastName": "L"}], "matchOn": ["ph\u0000one"]}'
    refused = api.client.post(BATCH, content=outer.encode(), headers=api.json_headers())
    assert_validation_error(refused, "match_on")
