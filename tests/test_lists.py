"""Lists that are complete and never silently wrong (issue 12 item 9), on both backends.

An unknown query parameter is a 422 naming it on every route; the contacts list filters by
``tag`` and orders by ``sort``; history pages with ``limit``/``offset``/``total``; companies
can be read, renamed, deleted, searched and paged, and refuse unknown body fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.cli.main import main
from contact_sync.clock import utcnow
from contact_sync.db.tables import companies, contacts
from contact_sync.ops.dead_letters import record
from contact_sync.settings import get_settings
from tests.test_api import (
    COMPANIES,
    CONTACTS,
    Api,
    _api,
    _client,
    assert_error,
    assert_validation_error,
)
from tests.test_isolation import api_routes


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --------------------------------------------------------------------------- unknown params


def test_an_unknown_query_parameter_is_422_naming_it_on_every_route(api: Api) -> None:
    contact = api.create()
    company = api.company("Acme")
    with api.engine.begin() as conn:
        letter = record(
            conn,
            payload={"event_id": "evt_parked", "team_id": api.team.id},
            reason="invalid_payload",
            message="parked for the test",
            event_id="evt_parked",
            team_id=api.team.id,
            now=utcnow(),
        )
    before = (_count(api.engine, contacts), _count(api.engine, companies))
    for method, path in api_routes():
        ids = {"contact_id": contact["id"], "company_id": company["id"], "dead_letter_id": letter}
        ids["key"] = "budget"
        url = path.format(**{name: ids[name] for name in re.findall(r"{(\w+)}", path)})
        body = {"name": "Co", "firstName": "A", "lastName": "B"} if method == "POST" else None
        if method == "PATCH":
            body = {"name": "Co"} if path.startswith(COMPANIES) else {"firstName": "X"}
        response = api.client.request(
            method, url, params={"bogusParam": "1"}, json=body, headers=api.auth()
        )
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["details"] == {"bogusParam": "Unknown query parameter"}
    # Nothing was written or deleted by the refused requests.
    assert (_count(api.engine, contacts), _count(api.engine, companies)) == before
    assert api.get(f"{CONTACTS}/{contact['id']}").json() == contact
    # The key is checked first: without one, the parameter's name is nobody's business.
    assert_error(api.client.get(CONTACTS, params={"bogusParam": "1"}), 401)


def test_the_parameter_a_campaign_mistyped_is_refused_not_ignored(api: Api) -> None:
    api.create(tags=["vip"])
    api.create(tags=["cold"])
    response = api.get(CONTACTS, params={"tags": "vip"})  # the field is "tag"
    assert_validation_error(response, "tags")
    assert response.json()["details"] == {"tags": "Unknown query parameter"}


def test_a_single_valued_parameter_given_twice_is_422_not_the_last_one_wins(api: Api) -> None:
    for params in (
        [("limit", "1"), ("limit", "2")],
        [("sort", "last_name"), ("sort", "-last_name")],
    ):
        name = params[0][0]
        response = api.get(CONTACTS, params=params)
        assert_validation_error(response, name)
        assert response.json()["details"] == {name: "Must be given once"}
    both = api.get(CONTACTS, params={"teamId": api.team.id, "team_id": api.other_team.id})
    assert_validation_error(both, "team_id")


# --------------------------------------------------------------------------- tag


@pytest.fixture
def tagged(api: Api) -> Api:
    for name, tags in (
        ("Ada", ["vip", "solar"]),
        ("Grace", ["vip"]),
        ("Alan", ["solar"]),
        ("Edsger", []),
        ("Quote", ['a"b', "50%_off"]),
    ):
        api.create(firstName=name, tags=tags)
    return api


def _firsts(api: Api, params: Any) -> tuple[list[str], int]:
    response = api.get(CONTACTS, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    return [c["first_name"] for c in page["data"]], page["total"]


def test_tag_keeps_only_contacts_with_every_tag_given_and_total_counts_them(
    tagged: Api,
) -> None:
    assert _firsts(tagged, {"tag": "vip"}) == (["Grace", "Ada"], 2)
    assert _firsts(tagged, [("tag", "vip"), ("tag", "solar")]) == (["Ada"], 1)
    assert _firsts(tagged, [("tag", "solar"), ("tag", "vip"), ("tag", "vip")]) == (["Ada"], 1)
    assert _firsts(tagged, {"tag": "solar", "limit": "1"}) == (["Alan"], 2)
    assert _firsts(tagged, {"tag": "solar", "limit": "1", "offset": "1"}) == (["Ada"], 2)
    assert _firsts(tagged, {"tag": "nobody"}) == ([], 0)


def test_tag_matches_exactly_and_literally(tagged: Api) -> None:
    assert _firsts(tagged, {"tag": "VIP"}) == ([], 0)
    assert _firsts(tagged, {"tag": "vi"}) == ([], 0)
    assert _firsts(tagged, {"tag": " vip "}) == (["Grace", "Ada"], 2)  # stripped, as stored
    assert _firsts(tagged, {"tag": 'a"b'}) == (["Quote"], 1)
    assert _firsts(tagged, {"tag": "50%_off"}) == (["Quote"], 1)
    assert _firsts(tagged, {"tag": "50%"}) == ([], 0)


def test_tag_combines_with_the_other_filters(tagged: Api) -> None:
    assert _firsts(tagged, {"tag": "vip", "search": "lovelace"}) == (["Grace", "Ada"], 2)
    assert _firsts(tagged, {"tag": "vip", "doNotCall": "true"}) == ([], 0)


@pytest.mark.parametrize(
    "params", [{"tag": ""}, {"tag": "x" * 65}, [("tag", f"t{n}") for n in range(21)]]
)
def test_a_bad_tag_is_422_naming_tag(api: Api, params: Any) -> None:
    assert_validation_error(api.get(CONTACTS, params=params), "tag")


# --------------------------------------------------------------------------- sort


@pytest.fixture
def sortable(api: Api) -> dict[str, str]:
    """Created in this order; Babbage is updated last; two Hoppers tie on last name."""
    ids = {}
    for first, last in (
        ("Grace", "Hopper"),
        ("Charles", "Babbage"),
        ("Jan", "de Vries"),
        ("Anne", "Hopper"),
        ("Alan", "Turing"),
    ):
        ids[first] = api.create(firstName=first, lastName=last)["id"]
    assert api.patch(ids["Charles"], {"notes": "updated last"}).status_code == 200
    return ids


def _hoppers(ids: dict[str, str], descending: bool) -> list[str]:
    return sorted(("Grace", "Anne"), key=lambda first: ids[first], reverse=descending)


def test_each_sort_orders_the_list_with_id_breaking_ties(
    api: Api, sortable: dict[str, str]
) -> None:
    created = ["Grace", "Charles", "Jan", "Anne", "Alan"]
    updated = ["Grace", "Jan", "Anne", "Alan", "Charles"]
    by_name = ["Charles", "Jan", *_hoppers(sortable, False), "Alan"]
    expected = {
        "created_at": created,
        "-created_at": created[::-1],
        "updated_at": updated,
        "-updated_at": updated[::-1],
        "last_name": by_name,
        "-last_name": ["Alan", *_hoppers(sortable, True), "Jan", "Charles"],
    }
    for sort, firsts in expected.items():
        assert _firsts(api, {"sort": sort}) == (firsts, 5), sort
    assert _firsts(api, {}) == (created[::-1], 5)  # the default: newest first


def test_pages_of_a_sort_cover_every_contact_once_in_order(
    api: Api, sortable: dict[str, str]
) -> None:
    by_name = ["Charles", "Jan", *_hoppers(sortable, False), "Alan"]
    assert _firsts(api, {"sort": "last_name"})[0] == by_name
    for sort in ("last_name", "-last_name", "updated_at", "-created_at"):
        whole, _ = _firsts(api, {"sort": sort})
        paged = [
            _firsts(api, {"sort": sort, "limit": "2", "offset": str(offset)})[0]
            for offset in range(0, 5, 2)
        ]
        assert [first for page in paged for first in page] == whole, sort


@pytest.mark.parametrize("sort", ["name", "created", "+created_at", "--last_name", "id", ""])
def test_an_unknown_sort_is_422_naming_sort_and_the_choices(api: Api, sort: str) -> None:
    message = assert_validation_error(api.get(CONTACTS, params={"sort": sort}), "sort")
    assert "-created_at" in message
    assert "last_name" in message


def test_the_cli_lists_by_tag_and_sort(
    tagged: Api, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    get_settings.cache_clear()
    argv = ["--database-url", database_url, "contacts", "list", "--team", tagged.team.id]
    code = main([*argv, "--tag", "vip", "--tag", "solar", "--json"])
    page = json.loads(capsys.readouterr().out)
    assert (code, [c["first_name"] for c in page["data"]], page["total"]) == (0, ["Ada"], 1)
    assert main([*argv, "--tag", "vip", "--sort", "created_at", "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [c["first_name"] for c in page["data"]] == ["Ada", "Grace"]


# --------------------------------------------------------------------------- history


def _history(api: Api, contact_id: str, **params: str) -> Any:
    response = api.get(f"{CONTACTS}/{contact_id}/history", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_history_pages_newest_first_with_total_limit_and_offset(api: Api) -> None:
    contact = api.create()
    for n in range(4):
        assert api.patch(contact["id"], {"notes": f"note {n}"}).status_code == 200
    whole = _history(api, contact["id"])
    assert (whole["total"], whole["limit"], whole["offset"]) == (5, 50, 0)
    assert [r["version_after"] for r in whole["data"]] == [5, 4, 3, 2, 1]
    assert "provenance" in whole
    first = _history(api, contact["id"], limit="2")
    assert ([r["version_after"] for r in first["data"]], first["total"]) == ([5, 4], 5)
    last = _history(api, contact["id"], limit="2", offset="4")
    assert ([r["version_after"] for r in last["data"]], last["total"]) == ([1], 5)
    past = _history(api, contact["id"], limit="2", offset="9")
    assert (past["data"], past["total"], past["offset"]) == ([], 5, 9)
    assert _history(api, contact["id"], limit="500")["total"] == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"page": "2"}, "page"),
    ],
)
def test_a_bad_history_page_is_422_naming_it(api: Api, params: dict[str, str], field: str) -> None:
    contact = api.create()
    response = api.get(f"{CONTACTS}/{contact['id']}/history", params=params)
    assert_validation_error(response, field)


# --------------------------------------------------------------------------- companies


def test_a_company_with_an_unknown_field_is_422_and_not_created(api: Api) -> None:
    response = api.post(COMPANIES, {"name": "Zed", "bogus": 1})
    assert_validation_error(response, "bogus")
    assert response.json()["details"] == {"bogus": "Unknown field"}
    assert_validation_error(api.post(COMPANIES, {"name": "Zed", "companyId": "x"}), "company_id")
    assert _count(api.engine, companies) == 0


def test_a_company_is_read_and_renamed_by_id(api: Api) -> None:
    company = api.company("Acme")
    url = f"{COMPANIES}/{company['id']}"
    assert api.get(url).json() == company
    renamed = api.client.patch(url, json={"name": "  Acme Solar "}, headers=api.auth())
    assert renamed.status_code == 200, renamed.text
    body = renamed.json()
    assert (body["id"], body["name"], body["created_at"]) == (
        company["id"],
        "Acme Solar",
        company["created_at"],
    )
    assert body["updated_at"] >= company["updated_at"]
    assert api.get(url).json() == body
    same = api.client.patch(url, json={"name": "Acme Solar"}, headers=api.auth())
    assert same.json() == body  # a no-op keeps updated_at


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Zed", "bogus": 1}, "bogus"),
        ({"name": "Zed", "teamId": "x"}, "team_id"),
        ({}, "name"),
        ({"name": " "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a\x00b"}, "name"),
        ([1], "body"),
    ],
)
def test_a_bad_company_patch_is_422_naming_the_field_and_changes_nothing(
    api: Api, body: Any, field: str
) -> None:
    company = api.company("Acme")
    url = f"{COMPANIES}/{company['id']}"
    response = api.client.patch(url, content=json.dumps(body), headers=api.json_headers())
    assert_validation_error(response, field)
    assert api.get(url).json() == company


def test_a_company_with_contacts_cannot_be_deleted_until_they_leave(api: Api) -> None:
    company = api.company("Acme")
    url = f"{COMPANIES}/{company['id']}"
    member = api.create(companyId=company["id"])
    refused = api.client.delete(url, headers=api.auth())
    assert_error(refused, 409)
    assert "1 contacts" in refused.json()["error"]
    assert api.get(url).json() == company
    assert api.get(f"{CONTACTS}/{member['id']}").json()["company_id"] == company["id"]
    assert api.patch(member["id"], {"companyId": None}).status_code == 200
    assert api.client.delete(url, headers=api.auth()).status_code == 204
    assert_error(api.get(url), 404)
    assert_error(api.client.delete(url, headers=api.auth()), 404)


def test_another_teams_company_is_404_to_read_rename_and_delete(api: Api) -> None:
    theirs = api.company("Rival Co", key=api.other_key)
    url = f"{COMPANIES}/{theirs['id']}"
    assert_error(api.get(url), 404)
    assert_error(api.client.patch(url, json={"name": "Mine"}, headers=api.auth()), 404)
    assert_error(api.client.delete(url, headers=api.auth()), 404)
    assert api.get(url, key=api.other_key).json() == theirs


def test_companies_are_searched_and_paged_with_total(api: Api) -> None:
    for name in ("Beta Solar", "Alpha Solar", "Gamma Roofing", "100% Solar", "Delta_Co"):
        api.company(name)
    api.company("Rival Solar", key=api.other_key)

    def names(**params: str) -> tuple[list[str], int]:
        response = api.get(COMPANIES, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        return [c["name"] for c in page["data"]], page["total"]

    assert names(search="SOLAR") == (["100% Solar", "Alpha Solar", "Beta Solar"], 3)
    assert names(search="solar", limit="2") == (["100% Solar", "Alpha Solar"], 3)
    assert names(search="solar", limit="2", offset="2") == (["Beta Solar"], 3)
    assert names(search="%") == (["100% Solar"], 1)
    assert names(search="a_c") == (["Delta_Co"], 1)
    assert names(limit="1", offset="4") == (["Gamma Roofing"], 5)
    page = api.get(COMPANIES).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 50, 0)
    for name in ("teamId", "team_id"):  # another team's companies: 403, searched or not
        assert_error(api.get(COMPANIES, params={name: api.other_team.id, "search": "a"}), 403)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"search": "x" * 201}, "search"),
        ({"name": "Acme"}, "name"),
    ],
)
def test_a_bad_companies_query_is_422_naming_it(
    api: Api, params: dict[str, str], field: str
) -> None:
    assert_validation_error(api.get(COMPANIES, params=params), field)
