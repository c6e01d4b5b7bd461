"""Hostile input (issue #6): every kind of bad input, to the HTTP API and to the worker.

Each input gets a clear error and nothing else changes:

- the API answers a 4xx whose JSON names the field (``details`` of a 422, or the
  ``error`` of a 403/404/413), and every table is the same before and after;
- the worker parks the message as exactly one dead letter with a reason code and the
  payload as received, leaves every other table as it was (only the inbox may note the
  event as ``dead_lettered``, docs/design.md §2), stays up, and serves the next good event.

The API part runs on PostgreSQL and SQLite through the in-process client of
``test_api.py``; the worker part runs against ONE real ``contact-sync worker``
process for the whole module, fed raw Redis messages on a Redis database of its own.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from sqlalchemy import Engine, Table, delete, func, inspect, select

from contact_sync.accounts.teams import Team, create_team
from contact_sync.calls.apply import apply_payloads
from contact_sync.contacts.companies import create_company
from contact_sync.contacts.store import create_contact, update_contact
from contact_sync.db.engine import make_engine
from contact_sync.db.tables import (
    api_keys,
    calls,
    companies,
    contact_history,
    contacts,
    dead_letters,
    delivery_attempts,
    processed_events,
    suppressions,
    teams,
)
from contact_sync.worker.celery_app import TASK_APPLY, TASK_APPLY_BATCH
from tests.factories import (
    EMBED,
    QUEUE,
    call_event,
    empty_tables,
    envelope,
    make_contact,
    task_body,
    task_envelope,
)
from tests.test_api import (
    COMPANIES,
    CONTACTS,
    ELIGIBLE,
    Api,
    _api,
    _client,
    assert_error,
    assert_validation_error,
)
from tests.test_import_csv import run_import
from tests.workers import start_worker, stop_worker

# Redis databases of the other worker tests: 7 (test_worker), 8 (test_worker_hostile),
# 9 (test_worker_metrics), 10 (test_worker_grouping, test_worker_faults), 11 (bench),
# 13 (test_isolation).
BROKER_DB = 14
TEN_MB = 10 * 1024 * 1024
CHUNK = 1024 * 1024
HUGE = str(10**400)  # no double holds it
BEYOND_64_BITS = str(2**64)
BELOW_64_BITS = str(-(2**63) - 1)
SQL = "'; DROP TABLE contacts; --"
LETTERS = "/api/crm/dead-letters"
UPSERT = f"{CONTACTS}/upsert"
BATCH_UPSERT = f"{CONTACTS}/batch/upsert"

# Every table a request or an event could change; dead letters are checked on their own.
DATA_TABLES = (
    teams,
    api_keys,
    companies,
    contacts,
    contact_history,
    processed_events,
    delivery_attempts,
    suppressions,
    calls,
)


# When a key was last used is not data a request may change or not: any request with
# the key sets it (at most once a minute). tests/test_keys.py checks it.
NOT_DATA = {api_keys.c.last_used_at}


def snapshot(engine: Engine, tables: tuple[Table, ...] = DATA_TABLES) -> dict[str, list[Any]]:
    """Every row of ``tables``, in primary-key order."""
    with engine.connect() as conn:
        return {
            table.name: sorted(
                (
                    dict(row._mapping)
                    for row in conn.execute(select(*(c for c in table.c if c not in NOT_DATA)))
                ),
                key=lambda row: repr([row[c.name] for c in table.primary_key]),
            )
            for table in tables
        }


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` nested objects around ``leaf``."""
    return '{"a": ' * depth + leaf + "}" * depth


def many_keys(count: int) -> str:
    return json.dumps({f"k{i}": i for i in range(count)})


# =========================================================================== the HTTP API
@dataclass
class World:
    """The API, a contact of each team and a company of each team."""

    api: Api
    mine: dict[str, Any]
    theirs: dict[str, Any]
    my_company: dict[str, Any]
    their_company: dict[str, Any]


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


@pytest.fixture
def world(api: Api) -> World:
    """Written through the services in one transaction (the API part's time is in set-ups)."""
    with api.engine.begin() as conn:
        my_company = create_company(conn, team_id=api.team.id, name="Analytical Engines")
        their_company = create_company(conn, team_id=api.other_team.id, name="Rival Roofing")
        mine = create_contact(
            conn,
            team_id=api.team.id,
            data={
                "firstName": "Ada",
                "lastName": "Lovelace",
                "phone": "(202) 555-0100",
                "timezone": "America/Chicago",
                "companyId": my_company.id,
                "customFields": {"budget": 5000},
                "tags": ["solar"],
            },
            api_key_id=api.key_id,
        )
        # Version 2: a history of two records.
        update_contact(conn, team_id=api.team.id, contact_id=mine.id, data={"jobTitle": "Countess"})
        theirs = create_contact(
            conn,
            team_id=api.other_team.id,
            data={"firstName": "Rival", "lastName": "Lovelace", "phone": "(202) 555-0100"},
        )
    return World(
        api,
        api.get(f"{CONTACTS}/{mine.id}").json(),
        theirs.model_dump(mode="json"),
        {"id": my_company.id},
        {"id": their_company.id},
    )


@contextmanager
def nothing_changes(world: World) -> Iterator[None]:
    """Every table, dead letters included, and both contacts are the same afterwards."""
    api = world.api
    tables = (*DATA_TABLES, dead_letters)
    before = snapshot(api.engine, tables)
    yield
    assert snapshot(api.engine, tables) == before
    assert api.get(f"{CONTACTS}/{world.mine['id']}").json() == world.mine  # version unchanged
    assert api.get(f"{CONTACTS}/{world.theirs['id']}", key=api.other_key).json() == world.theirs


def send(api: Api, method: str, url: str, content: Any, **headers: str) -> httpx.Response:
    """A request with a raw body (bytes, or an iterator of chunks to stream it)."""
    return api.client.request(
        method, url, content=content, headers={**api.json_headers(), **headers}
    )


def _writes(world: World) -> list[tuple[str, str]]:
    """Every endpoint that reads a JSON body."""
    return [
        ("POST", CONTACTS),
        ("PATCH", f"{CONTACTS}/{world.mine['id']}"),
        ("POST", UPSERT),
        ("POST", BATCH_UPSERT),
        ("POST", COMPANIES),
        ("PATCH", f"{COMPANIES}/{world.my_company['id']}"),
    ]


# --------------------------------------------------------------- not JSON, bad bytes, 413
NOT_A_JSON_OBJECT: list[tuple[str, bytes]] = [
    ("not-json", b"{this is not json"),
    ("empty", b""),
    ("truncated", b'{"firstName": "Ada", "lastName": "Lo'),
    ("trailing-garbage", b'{"firstName": "Ada", "lastName": "Lovelace"} x'),
    ("single-quotes", b"{'firstName': 'Ada', 'lastName': 'Lovelace'}"),
    ("null", b"null"),
    ("array", b'[{"firstName": "Ada", "lastName": "Lovelace"}]'),
    ("string", b'"Ada Lovelace"'),
    ("number", b"42"),
    ("bare-nan", b"NaN"),
    ("bare-infinity", b"-Infinity"),
    ("invalid-utf8", b"\xff\xfe\xfd"),
    ("invalid-utf8-in-a-string", b'{"firstName": "Ad\xe1", "lastName": "Lovelace"}'),
    ("latin-1", '{"firstName": "José", "lastName": "Lovelace"}'.encode("latin-1")),
    ("overlong-utf8-nul", b'{"firstName": "A\xc0\x80", "lastName": "Lovelace"}'),
    ("raw-nul-byte", b'{"firstName": "A\x00da", "lastName": "Lovelace"}'),
    ("only-a-nul-byte", b"\x00"),
    ("nul-after-the-object", b'{"firstName": "Ada", "lastName": "Lovelace"}\x00'),
    ("nested-100000-deep", b"[" * 100_000 + b"]" * 100_000),
    ("integer-of-5000-digits", b'{"firstName": "Ada", "lastName": "L", "x": ' + b"9" * 5000 + b"}"),
]


@pytest.mark.parametrize(
    "content", [c for _, c in NOT_A_JSON_OBJECT], ids=[i for i, _ in NOT_A_JSON_OBJECT]
)
def test_a_body_that_is_not_a_json_object_is_422_naming_body(world: World, content: bytes) -> None:
    with nothing_changes(world):
        for method, url in _writes(world):
            assert_validation_error(send(world.api, method, url, content), "body")


@pytest.mark.parametrize("streamed", [False, True], ids=["with-length", "streamed"])
def test_a_10_mb_body_is_413_on_every_write(world: World, streamed: bool) -> None:
    padding = b"x" * TEN_MB
    body = b'{"firstName": "Ada", "lastName": "Lovelace", "name": "Co", "notes": "' + padding
    body += b'"}'
    with nothing_changes(world):
        for method, url in _writes(world):
            content: Any = body
            if streamed:  # no Content-Length: cut while it streams in
                content = iter([body[i : i + CHUNK] for i in range(0, len(body), CHUNK)])
            response = send(world.api, method, url, content)
            assert_error(response, 413, "Request body too large")


# --------------------------------------------------------------- fields: one bad value each
# (name, JSON text of one member of the body, the field the 422 must name, where)
# ``where``: "both" (create and patch), "create" or "patch".
FIELD_ERRORS: list[tuple[str, str, str, str]] = [
    # wrong types
    ("first-name-number", '"firstName": 5', "first_name", "both"),
    ("last-name-array", '"lastName": ["Lovelace"]', "last_name", "both"),
    ("first-name-object", '"first_name": {"text": "Ada"}', "first_name", "both"),
    ("email-number", '"email": 7', "email", "both"),
    ("phone-number", '"phone": 12025550100', "phone", "both"),
    ("phone-secondary-bool", '"phoneSecondary": true', "phone_secondary", "both"),
    ("do-not-call-string", '"doNotCall": "true"', "do_not_call", "both"),
    ("do-not-call-number", '"doNotCall": 1', "do_not_call", "both"),
    ("tags-object", '"tags": {"solar": true}', "tags", "both"),
    ("tags-of-numbers", '"tags": [1, 2]', "tags", "both"),
    ("custom-fields-array", '"customFields": [1, 2]', "custom_fields", "both"),
    ("custom-fields-string", '"customFields": "budget=5"', "custom_fields", "both"),
    ("company-id-number", '"companyId": 7', "company_id", "both"),
    ("notes-object", '"notes": {}', "notes", "both"),
    ("lead-status-bool", '"leadStatus": false', "lead_status", "both"),
    ("timezone-number", '"timezone": -5', "timezone", "both"),
    ("team-id-number", '"teamId": 7', "team_id", "create"),
    ("version-string", '"version": "2"', "version", "patch"),
    ("version-float", '"version": 2.0', "version", "patch"),
    ("unknown-field", '"nickname": "Ada"', "nickname", "both"),
    # missing (null) names
    ("first-name-null", '"firstName": null', "first_name", "both"),
    ("last-name-null", '"last_name": null', "last_name", "both"),
    # NUL and text that is not Unicode, escaped in valid JSON
    ("nul-in-a-name", r'"firstName": "A\u0000da"', "first_name", "both"),
    ("nul-in-notes", r'"notes": "call \u0000 later"', "notes", "both"),
    ("lone-surrogate", r'"jobTitle": "\ud800"', "job_title", "both"),
    ("nul-in-a-custom-key", r'"customFields": {"a\u0000b": 1}', "custom_fields", "both"),
    ("nul-in-a-custom-value", r'"customFields": {"k": ["x\u0000"]}', "custom_fields", "both"),
    ("surrogate-custom-key", r'"customFields": {"\udfff": 1}', "custom_fields", "both"),
    ("nul-in-a-tag", r'"tags": ["hot\u0000"]', "tags", "both"),
    # huge integers and NaN / Infinity (JSON text the parser reads as non-finite)
    ("custom-nan", '"customFields": {"n": NaN}', "custom_fields", "both"),
    ("custom-infinity", '"customFields": {"n": Infinity}', "custom_fields", "both"),
    ("custom-minus-infinity", '"customFields": {"n": [-Infinity]}', "custom_fields", "both"),
    ("custom-1e400", '"customFields": {"n": 1e400}', "custom_fields", "both"),
    ("custom-10**400", f'"customFields": {{"n": {HUGE}}}', "custom_fields", "both"),
    ("custom-2**64", f'"customFields": {{"n": {BEYOND_64_BITS}}}', "custom_fields", "both"),
    (
        "custom-below-int64",
        f'"customFields": {{"n": {{"m": {BELOW_64_BITS}}}}}',
        "custom_fields",
        "both",
    ),
    ("do-not-call-nan", '"doNotCall": NaN', "do_not_call", "both"),
    ("first-name-10**400", f'"firstName": {HUGE}', "first_name", "both"),
    ("version-nan", '"version": NaN', "version", "patch"),
    ("version-10**400", f'"version": {HUGE}', "version", "patch"),
    ("version-2**64", f'"version": {BEYOND_64_BITS}', "version", "patch"),
    # deeply nested custom fields
    ("custom-nested-21-objects", f'"customFields": {{"d": {nested(21)}}}', "custom_fields", "both"),
    (
        "custom-nested-100-arrays",
        '"customFields": {"d": ' + "[" * 100 + "]" * 100 + "}",
        "custom_fields",
        "both",
    ),
    # 10,000 keys (and 10,000 tags)
    ("custom-10000-keys", f'"customFields": {many_keys(10_000)}', "custom_fields", "both"),
    ("tags-10000", '"tags": ' + json.dumps([f"t{i}" for i in range(10_000)]), "tags", "both"),
]


def _create_body(member: str) -> bytes:
    return ('{"firstName": "Grace", "lastName": "Hopper", ' + member + "}").encode()


@pytest.mark.parametrize(
    ("member", "field", "where"),
    [c[1:] for c in FIELD_ERRORS],
    ids=[c[0] for c in FIELD_ERRORS],
)
def test_a_bad_field_is_422_naming_it_on_create_and_patch(
    world: World, member: str, field: str, where: str
) -> None:
    api = world.api
    with nothing_changes(world):
        if where in ("both", "create"):
            for url in (CONTACTS, UPSERT):
                response = send(api, "POST", url, _create_body(member))
                assert_validation_error(response, field)
                assert set(response.json()["details"]) == {field}
            batch = b'{"items": [' + _create_body(member) + b"]}"
            response = send(api, "POST", BATCH_UPSERT, batch)
            assert response.status_code == 200, response.text
            [item] = response.json()["data"]
            assert item["status"] == "failed"
            assert [error["field"] for error in item["errors"]] == [field]
        if where in ("both", "patch"):
            url = f"{CONTACTS}/{world.mine['id']}"
            response = send(api, "PATCH", url, ("{" + member + "}").encode())
            assert_validation_error(response, field)
            assert set(response.json()["details"]) == {field}


def test_missing_fields_are_422_naming_each(world: World) -> None:
    api = world.api
    with nothing_changes(world):
        both = send(api, "POST", CONTACTS, b"{}")
        assert_validation_error(both, "first_name")
        assert set(both.json()["details"]) == {"first_name", "last_name"}
        assert_validation_error(send(api, "POST", CONTACTS, b'{"firstName": "A"}'), "last_name")
        assert_validation_error(send(api, "POST", COMPANIES, b"{}"), "name")
        assert_validation_error(send(api, "POST", COMPANIES, b'{"name": 5}'), "name")


def test_custom_fields_cannot_grow_past_200_keys_or_64_kib_patch_by_patch(world: World) -> None:
    """Each patch is within the limits; the contact they would make is not (docs/design.md §2)."""
    api = world.api
    contact_url = f"{CONTACTS}/{world.mine['id']}"
    fill = {f"k{i}": i for i in range(199)}  # with "budget": 200 keys, the most allowed
    response = api.patch(world.mine["id"], {"customFields": fill})
    assert response.status_code == 200, response.text
    world.mine = response.json()
    with nothing_changes(world):
        one_more = api.patch(world.mine["id"], {"customFields": {"k199": 1}})
        assert_validation_error(one_more, "custom_fields")
    # Replacing and removing keys at the limit is still fine.
    ok = api.patch(world.mine["id"], {"customFields": {"k0": None, "k1": "one", "k199": 1}})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["custom_fields"]) == 200
    # 64 KiB: two values of 40,000 characters each are fine alone, not together.
    cleared = api.patch(
        world.mine["id"], {"customFields": dict.fromkeys(ok.json()["custom_fields"])}
    )
    assert cleared.json()["custom_fields"] == {}
    first = api.patch(world.mine["id"], {"customFields": {"a": "x" * 40_000}})
    assert first.status_code == 200, first.text
    world.mine = api.get(contact_url).json()
    with nothing_changes(world):
        second = api.patch(world.mine["id"], {"customFields": {"b": "y" * 40_000}})
        assert_validation_error(second, "custom_fields")


# --------------------------------------------------------------- nearly valid zones and phones
NEARLY_VALID: list[tuple[str, str]] = [
    ("timezone", "America/New_Yrok"),
    ("timezone", "UTC+25"),
    ("timezone", "Etc/GMT+25"),
    ("timezone", "america/chicago"),
    ("timezone", "America/Chicago/"),
    ("timezone", "posix/America/Chicago"),
    ("timezone", "localtime"),  # a file of the machine's tz database, not an IANA name
    ("timezone", "../../../etc/passwd"),
    ("phone", "+1202555019"),  # one digit short
    ("phone", "+1 (202) 555-01999"),  # one digit too many
    ("phone", "++12025550199"),
    ("phone", "+1 202 555 O199"),  # a letter O for a zero
    ("phone", "202-555-ABCD"),  # letters, read as a keypad number otherwise
    ("phone", "+1 202 555 0199 ext. 12"),  # the extension would be dropped
    ("phone", "+999 202 555 0199"),  # no such country code
    ("phone_secondary", "++1 202 555 0199"),
    ("phone_secondary", "tel:+12025550199"),
    ("phone_secondary", "1-800-FLOWERS"),
]


@pytest.mark.parametrize(("field", "value"), NEARLY_VALID, ids=[v for _, v in NEARLY_VALID])
def test_a_nearly_valid_timezone_or_phone_is_422_naming_it(
    world: World, field: str, value: str
) -> None:
    api = world.api
    camel = {"phone_secondary": "phoneSecondary"}.get(field, field)
    with nothing_changes(world):
        for name in (camel, field):
            created = api.post(CONTACTS, {"firstName": "Grace", "lastName": "Hopper", name: value})
            assert_validation_error(created, field)
            assert_validation_error(api.patch(world.mine["id"], {name: value}), field)
        if field == "timezone":
            for name in ("defaultTimezone", "default_timezone"):
                response = api.get(ELIGIBLE, params={name: value, "at": "2026-11-20T15:00:00Z"})
                assert_validation_error(response, "default_timezone")


# --------------------------------------------------------------- SQL and LIKE metacharacters
LITERAL_NAMES = [
    ("Percy", "100% Sure", "percy@example.org"),
    ("Una", "Under_Score", "una@example.org"),
    ("Ulla", "UnderXScore", "ulla@example.org"),  # what `under_score` matches if _ is a wildcard
    ("Bea", "Back\\Slash", "bea@example.org"),
    ("Bobby", "'; DROP TABLE contacts; --", "bobby@example.org"),
    ("Stella", "Star*", "stella@example.org"),
    ("Ida", "Either/Or", "ida@example.org"),  # the escape character SQLAlchemy uses for LIKE
    ("Quinn", 'Quote"d', "o'brien@example.org"),
    ("Plain", "Person", "plain_person@example.org"),
]
SEARCHES = [
    "%",
    "_",
    "\\",
    "'; DROP TABLE contacts; --",
    "*",
    "%%",
    "100%",
    "under_score",
    "\\s",
    "/",
    "/%",
    "'",
    '"',
    "' OR '1'='1",
    "%' OR 1=1 --",
    "[a-z]",
    "^.*$",
]


@pytest.fixture
def literal_world(world: World) -> World:
    with world.api.engine.begin() as conn:
        for first, last, email in LITERAL_NAMES:
            data = {"firstName": first, "lastName": last, "email": email}
            create_contact(conn, team_id=world.api.team.id, data=data)
    return world


@pytest.mark.parametrize("search", SEARCHES)
def test_sql_and_like_metacharacters_in_search_are_literal(
    literal_world: World, search: str
) -> None:
    world = literal_world
    api = world.api
    expected = sorted(
        f"{first} {last}"
        for first, last, email in [
            *LITERAL_NAMES,
            (world.mine["first_name"], world.mine["last_name"], ""),
        ]
        if search.lower() in f"{first} {last}".lower() or search.lower() in email.lower()
    )
    with nothing_changes(world):
        response = api.get(CONTACTS, params={"search": search, "limit": "500"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert sorted(f"{c['first_name']} {c['last_name']}" for c in body["data"]) == expected
        assert body["total"] == len(expected)
        # Other text parameters are bound values too.
        for params in ({"companyId": search}, {"company_id": search}):
            listed = api.get(CONTACTS, params=params)
            assert listed.status_code == 200, listed.text
            assert listed.json()["total"] == 0
        assert_error(api.get(CONTACTS, params={"teamId": search}), 403)
        # A tag is an exact, bound value: no metacharacter matches my contact's "solar".
        tagged = api.get(CONTACTS, params={"tag": search})
        assert (tagged.status_code, tagged.json()["total"]) == (200, 0), tagged.text
        companies_found = api.get(COMPANIES, params={"search": search}).json()
        names = ["Analytical Engines"]
        assert companies_found["total"] == sum(search.lower() in n.lower() for n in names)
        if "/" not in search:  # a path of its own
            assert_error(api.get(f"{CONTACTS}/{quote(search, safe='')}"), 404)
    assert {"contacts", "contact_history", "companies", "teams"} <= set(
        inspect(api.engine).get_table_names()
    )
    assert api.get(CONTACTS).json()["total"] == len(LITERAL_NAMES) + 1


# --------------------------------------------------------------- absurd limits and offsets
# docs/design.md §7: `limit` out of 1..500 (1..1000 for eligible) or a negative `offset` is a 422
# naming it, never clamped.
ABSURD_PAGES: list[tuple[str, str, str]] = [
    (CONTACTS, "limit", "0"),
    (CONTACTS, "limit", "-1"),
    (CONTACTS, "limit", str(10**12)),
    (CONTACTS, "limit", HUGE),
    (CONTACTS, "limit", "abc"),
    (CONTACTS, "limit", ""),
    (CONTACTS, "limit", "2.5"),
    (CONTACTS, "limit", "1e3"),
    (CONTACTS, "limit", "NaN"),
    (CONTACTS, "limit", "Infinity"),
    (CONTACTS, "limit", "0x10"),
    (CONTACTS, "limit", "9" * 5000),
    (CONTACTS, "offset", "-1"),
    (CONTACTS, "offset", str(10**18)),
    (CONTACTS, "offset", HUGE),
    (CONTACTS, "offset", "abc"),
    (CONTACTS, "offset", "NaN"),
    (COMPANIES, "limit", "0"),
    (COMPANIES, "limit", str(10**12)),
    (COMPANIES, "limit", "2.5"),
    (COMPANIES, "offset", "-1"),
    (COMPANIES, "offset", HUGE),
    (ELIGIBLE, "limit", "0"),
    (ELIGIBLE, "limit", "-1"),
    (ELIGIBLE, "limit", str(10**12)),
    (ELIGIBLE, "limit", "abc"),
    (ELIGIBLE, "limit", "Infinity"),
    # Dead letters: 1..100 (a letter holds its payload), a negative offset.
    (LETTERS, "limit", "0"),
    (LETTERS, "limit", "101"),
    (LETTERS, "limit", str(10**12)),
    (LETTERS, "limit", HUGE),
    (LETTERS, "limit", "abc"),
    (LETTERS, "limit", ""),
    (LETTERS, "limit", "2.5"),
    (LETTERS, "limit", "NaN"),
    (LETTERS, "offset", "-1"),
    (LETTERS, "offset", HUGE),
    (LETTERS, "offset", "abc"),
]
ABSURD_PAGES_OF_HISTORY = [
    ("limit", "0"),
    ("limit", "501"),
    ("limit", HUGE),
    ("limit", "1e3"),
    ("offset", "-1"),
    ("offset", "abc"),
]


@pytest.mark.parametrize(
    ("url", "name", "value"),
    ABSURD_PAGES,
    ids=[f"{u.rsplit('/', 1)[-1]}-{n}={v[:12]}" for u, n, v in ABSURD_PAGES],
)
def test_an_absurd_limit_or_offset_is_422_naming_it(
    world: World, url: str, name: str, value: str
) -> None:
    with nothing_changes(world):
        response = world.api.get(url, params={name: value})
        assert_validation_error(response, name)
        assert set(response.json()["details"]) == {name}


@pytest.mark.parametrize("page", ["history", "calls"])
@pytest.mark.parametrize(
    ("name", "value"),
    ABSURD_PAGES_OF_HISTORY,
    ids=[f"{n}={v[:12]}" for n, v in ABSURD_PAGES_OF_HISTORY],
)
def test_an_absurd_page_of_history_or_calls_is_422_naming_it(
    world: World, name: str, value: str, page: str
) -> None:
    with nothing_changes(world):
        url = f"{CONTACTS}/{world.mine['id']}/{page}"
        response = world.api.get(url, params={name: value})
        assert_validation_error(response, name)
        assert set(response.json()["details"]) == {name}


HOSTILE_LIST_PARAMS: list[tuple[str, dict[str, Any], str]] = [
    ("tag-nul", {"tag": "so\x00lar"}, "tag"),
    ("tag-huge", {"tag": "x" * 60_000}, "tag"),
    ("tag-blank", {"tag": "   "}, "tag"),
    ("tags-many", {"tag": [f"t{n}" for n in range(1000)]}, "tag"),
    ("sort-sql", {"sort": "created_at; DROP TABLE contacts"}, "sort"),
    ("sort-column", {"sort": "provenance"}, "sort"),
    ("sort-nul", {"sort": "last_name\x00"}, "sort"),
    ("sort-twice", {"sort": ["last_name", "created_at"]}, "sort"),
    ("unknown-huge-name", {"x" * 10_000: "1"}, "x" * 10_000),
    ("company-search-nul", {"search": "a\x00"}, "search"),
]


@pytest.mark.parametrize(
    ("params", "field"),
    [c[1:] for c in HOSTILE_LIST_PARAMS],
    ids=[c[0] for c in HOSTILE_LIST_PARAMS],
)
def test_hostile_list_parameters_are_422_naming_them(
    world: World, params: dict[str, Any], field: str
) -> None:
    url = COMPANIES if field == "search" else CONTACTS
    with nothing_changes(world):
        assert_validation_error(world.api.get(url, params=params), field)


def test_many_unknown_query_parameters_are_one_capped_422(world: World) -> None:
    params = {f"p{n}": "1" for n in range(1000)}
    with nothing_changes(world):
        response = world.api.get(CONTACTS, params=params)
        assert response.status_code == 422, response.text
        body = response.json()
        assert (len(body["details"]), body["details_omitted"]) == (50, 950)


# --------------------------------------------------------------- ids of other teams
# (name, method, URL, JSON body, status, error); <mine>, <theirs>, <their-co> and
# <their-team> stand for this world's ids: my contact, the other team's contact, company, team.
NOT_OURS = "Company does not belong to this team"
NOT_FOUND = "Contact not found"
OTHER_TEAMS: list[tuple[str, str, str, Any, int, str | None]] = [
    ("create-in-their-co", "POST", CONTACTS, {"companyId": "<their-co>"}, 403, NOT_OURS),
    ("create-in-their-co-snake", "POST", CONTACTS, {"company_id": "<their-co>"}, 403, NOT_OURS),
    ("move-to-their-co", "PATCH", f"{CONTACTS}/<mine>", {"companyId": "<their-co>"}, 403, NOT_OURS),
    ("create-in-their-team", "POST", CONTACTS, {"teamId": "<their-team>"}, 403, None),
    ("create-in-no-such-team", "POST", CONTACTS, {"team_id": "no-such-team"}, 403, None),
    ("co-in-their-team", "POST", COMPANIES, {"name": "C", "teamId": "<their-team>"}, 403, None),
    ("get-theirs", "GET", f"{CONTACTS}/<theirs>", None, 404, NOT_FOUND),
    ("history-of-theirs", "GET", f"{CONTACTS}/<theirs>/history", None, 404, NOT_FOUND),
    ("patch-theirs", "PATCH", f"{CONTACTS}/<theirs>", {"firstName": "Mine"}, 404, NOT_FOUND),
    ("patch-theirs-at-v1", "PATCH", f"{CONTACTS}/<theirs>", {"version": 1}, 404, NOT_FOUND),
    ("delete-theirs", "DELETE", f"{CONTACTS}/<theirs>", None, 404, NOT_FOUND),
    ("list-their-team", "GET", f"{CONTACTS}?teamId=<their-team>", None, 403, None),
    ("eligible-of-their-team", "GET", f"{ELIGIBLE}?team_id=<their-team>", None, 403, None),
    ("companies-of-their-team", "GET", f"{COMPANIES}?teamId=<their-team>", None, 403, None),
    ("create-in-unknown-co", "POST", CONTACTS, {"companyId": "nope"}, 422, None),
    ("get-their-co", "GET", f"{COMPANIES}/<their-co>", None, 404, "Not found"),
    ("rename-their-co", "PATCH", f"{COMPANIES}/<their-co>", {"name": "Mine"}, 404, "Not found"),
    ("delete-their-co", "DELETE", f"{COMPANIES}/<their-co>", None, 404, "Not found"),
    ("a-page-of-their-history", "GET", f"{CONTACTS}/<theirs>/history?limit=1", None, 404, None),
]


def _their(world: World, value: Any) -> Any:
    """``value`` with this world's ids for the placeholders."""
    if isinstance(value, dict):
        return {key: _their(world, item) for key, item in value.items()}
    if not isinstance(value, str):
        return value
    ids = {
        "<mine>": world.mine["id"],
        "<theirs>": world.theirs["id"],
        "<their-co>": world.their_company["id"],
        "<their-team>": world.api.other_team.id,
    }
    for placeholder, real in ids.items():
        value = value.replace(placeholder, real)
    return value


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "error"),
    [c[1:] for c in OTHER_TEAMS],
    ids=[c[0] for c in OTHER_TEAMS],
)
def test_ids_of_another_team_are_an_error_and_change_nothing(
    world: World, method: str, url: str, body: Any, status: int, error: str | None
) -> None:
    api = world.api
    if method == "POST" and url == CONTACTS:
        body = {"firstName": "Grace", "lastName": "Hopper", **body}
    content = json.dumps(_their(world, body)).encode() if body is not None else None
    with nothing_changes(world):
        response = send(api, method, _their(world, url), content)
        if status == 422:
            assert_validation_error(response, "company_id")
        else:
            assert_error(response, status, error)


def test_a_filter_by_another_teams_company_finds_nothing(world: World) -> None:
    with nothing_changes(world):
        for name in ("companyId", "company_id"):
            listed = world.api.get(CONTACTS, params={name: world.their_company["id"]}).json()
            assert (listed["data"], listed["total"]) == ([], 0)


# --------------------------------------------------------------- dead letters
NO_LETTER = "Dead letter not found"


@dataclass
class Letters:
    """``world`` with a dead letter of each team."""

    world: World
    mine: str
    theirs: str


@pytest.fixture
def letters(world: World) -> Letters:
    api = world.api
    parked = {}
    for team in (api.team, api.other_team):
        event = call_event(team.id, contact_id=f"ct_missing_{uuid.uuid4().hex[:8]}")
        with api.engine.begin() as conn:
            [outcome] = apply_payloads(conn, [event])
        assert outcome.outcome == "dead_lettered"
        with api.engine.connect() as conn:
            parked[team.id] = conn.execute(
                select(dead_letters.c.id).where(dead_letters.c.event_id == event["event_id"])
            ).scalar_one()
    return Letters(world, parked[api.team.id], parked[api.other_team.id])


HOSTILE_LETTER_IDS = [
    "%00",
    "a%00b",
    "x" * 10_000,
    quote(SQL, safe=""),
    "%25",
    "_",
    "..%2F..%2Fetc%2Fpasswd",
    "%F0%9F%98%80",
    "%ED%A0%80",  # a lone surrogate, as UTF-8 bytes
    "%FF",
    "1 OR 1=1",
]


@pytest.mark.parametrize("letter_id", HOSTILE_LETTER_IDS, ids=lambda v: v[:24])
def test_a_hostile_dead_letter_id_is_404_on_every_letter_route(
    letters: Letters, letter_id: str
) -> None:
    world = letters.world
    with nothing_changes(world):
        for method, suffix in (("GET", ""), ("POST", "/replay"), ("POST", "/discard")):
            response = send(world.api, method, f"{LETTERS}/{letter_id}{suffix}", None)
            # An id with a slash is no route at all (404 too, in the router's words).
            assert_error(response, 404, None if "%2F" in letter_id else NO_LETTER)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"reason": "a\x00b"}, "reason"),
        ({"reason": SQL}, "reason"),
        ({"reason": "%"}, "reason"),
        ({"reason": "Contact_Not_Found"}, "reason"),
        ({"open": "\x00"}, "open"),
        ({"open": "TRUE "}, "open"),
        ({"tag": "vip"}, "tag"),
        ({"reason": "contact_not_found", "reasons": "x"}, "reasons"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_hostile_dead_letter_filter_is_422_naming_it(
    letters: Letters, params: dict[str, str], named: str
) -> None:
    with nothing_changes(letters.world):
        response = letters.world.api.get(LETTERS, params=params)
        assert_validation_error(response, named)
        assert set(response.json()["details"]) == {named}


def test_another_teams_dead_letters_are_403_or_404_and_change_nothing(letters: Letters) -> None:
    api = letters.world.api
    with nothing_changes(letters.world):
        for name in ("teamId", "team_id"):
            for team_id in (api.other_team.id, "no-such-team", SQL, "a\x00b"):
                assert_error(api.get(LETTERS, params={name: team_id}), 403)
        for method, suffix in (("GET", ""), ("POST", "/replay"), ("POST", "/discard")):
            url = f"{LETTERS}/{letters.theirs}{suffix}"
            assert_error(send(api, method, url, None), 404, NO_LETTER)
            named = send(api, method, f"{url}?teamId={api.other_team.id}", None)
            assert_error(named, 403)
        assert [letter["id"] for letter in api.get(LETTERS).json()["data"]] == [letters.mine]


# An empty body is what these routes take: every other case.
NOT_EMPTY = [(name, content) for name, content in NOT_A_JSON_OBJECT if content.strip()]


@pytest.mark.parametrize("content", [c for _, c in NOT_EMPTY], ids=[i for i, _ in NOT_EMPTY])
def test_a_body_sent_to_replay_or_discard_is_422_naming_body(
    letters: Letters, content: bytes
) -> None:
    """They take no body (``{}`` and nothing are fine): anything else is refused, not
    ignored."""
    world = letters.world
    with nothing_changes(world):
        for action in ("replay", "discard"):
            url = f"{LETTERS}/{letters.mine}/{action}"
            assert_validation_error(send(world.api, "POST", url, content), "body")


@pytest.mark.parametrize("streamed", [False, True], ids=["with-length", "streamed"])
def test_a_10_mb_body_to_replay_or_discard_is_413(letters: Letters, streamed: bool) -> None:
    body = b'{"x": "' + b"x" * TEN_MB + b'"}'
    world = letters.world
    with nothing_changes(world):
        for action in ("replay", "discard"):
            content: Any = body
            if streamed:
                content = iter([body[i : i + CHUNK] for i in range(0, len(body), CHUNK)])
            url = f"{LETTERS}/{letters.mine}/{action}"
            assert_error(send(world.api, "POST", url, content), 413, "Request body too large")


# =========================================================================== CSV import
# ``contact-sync import`` (docs/design.md §14): a hostile cell fails its row, named by
# row and column, and every other row is imported; a hostile header refuses the file,
# and then nothing at all is written.


def _import_file(
    engine: Engine, team: Team, path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, list[list[str]]]:
    """Import ``path`` with ``--errors``: (exit code, summary line, the errors file's rows)."""
    errors = path.with_suffix(".errors.csv")
    code, out, err = run_import(engine, path, team.id, "--errors", str(errors), capsys=capsys)
    assert err == "" or code == 1, err
    found = errors.read_text(encoding="utf-8").splitlines() if errors.exists() else []
    return code, (out.splitlines() or [""])[-1], [line.split(",", 2) for line in found[1:]]


def _imported(engine: Engine, team: Team) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(contacts).where(contacts.c.team_id == team.id)).all()
    return {row.first_name: row for row in rows}


def test_import_nul_bytes_and_a_10_mb_cell_fail_their_rows_only(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostile.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("firstName,lastName,notes,cf.note\n")
        out.write("Nul,Name\x00,fine,\n")
        out.write("Nul2,Ok,,x\x00y\n")
        out.write('Big,Cell,"' + "x" * TEN_MB + '",\n')
        out.write("Good,Row,after the big cell,\n")
    started = time.perf_counter()
    code, line, problems = _import_file(engine, team, path, capsys)
    assert time.perf_counter() - started < 30
    assert (code, line) == (2, "created=1 updated=0 unchanged=0 failed=3")
    assert [p[:2] for p in problems] == [["2", "lastName"], ["3", "cf.note"], ["4", "notes"]]
    assert "NUL" in problems[0][2]
    assert "larger than" in problems[2][2]
    assert list(_imported(engine, team)) == ["Good"]


def test_import_formula_cells_are_stored_as_written_and_never_evaluated(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    formulas = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A2)", '=HYPERLINK("http://x")']
    path = tmp_path / "formulas.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["firstName", "lastName", "notes", "cf.formula", "tags"])
        for i, formula in enumerate(formulas):
            writer.writerow([f"F{i}", formula, formula, formula, formula])
    code, line, problems = _import_file(engine, team, path, capsys)
    assert (code, line, problems) == (0, "created=5 updated=0 unchanged=0 failed=0", [])
    rows = _imported(engine, team)
    for i, formula in enumerate(formulas):
        row = rows[f"F{i}"]
        assert (row.last_name, row.notes, row.custom_fields["formula"]) == (formula,) * 3
        assert row.tags == [formula]


def test_import_a_header_of_100k_columns_is_refused_fast_and_writes_nothing(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wide.csv"
    header = ",".join(["firstName", "lastName", *(f"c{i}" for i in range(100_000))])
    path.write_text(header + "\n" + "Ada,Lovelace" + "," * 100_000 + "\n", encoding="utf-8")
    before = snapshot(engine)
    started = time.perf_counter()
    code, line, _ = _import_file(engine, team, path, capsys)
    assert time.perf_counter() - started < 10
    assert (code, line) == (1, "")
    assert snapshot(engine) == before


def test_import_another_teams_company_id_fails_the_row_naming_company_id(
    engine: Engine, team: Team, other_team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:
        mine = create_company(conn, team_id=team.id, name="Mine")
        theirs = create_company(conn, team_id=other_team.id, name="Theirs")
    path = tmp_path / "companies.csv"
    path.write_text(
        "firstName,lastName,companyId\n"
        f"Own,Company,{mine.id}\nOther,Company,{theirs.id}\nNo,Company,not-an-id\n",
        encoding="utf-8",
    )
    code, line, problems = _import_file(engine, team, path, capsys)
    assert (code, line) == (2, "created=1 updated=0 unchanged=0 failed=2")
    assert [p[:2] for p in problems] == [["3", "companyId"], ["4", "companyId"]]
    assert theirs.id not in problems[0][2]
    assert list(_imported(engine, team)) == ["Own"]


# =========================================================================== the worker
@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    redis: redis.Redis
    log: Path


@pytest.fixture(scope="module")
def worker(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One real worker for every worker test of this module."""
    broker = redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    client = redis.Redis.from_url(broker)
    client.flushdb()
    log = tmp_path_factory.mktemp("hostile-worker") / "worker.log"
    process = start_worker(postgres_url, broker, log)
    yield Worker(process, client, log)
    stop_worker(process)
    client.flushdb()


@dataclass
class Target:
    """The worker, a database with a contact in each of two teams, and its helpers."""

    worker: Worker
    engine: Engine
    team: Team
    other_team: Team
    mine: str
    theirs: str

    def event(self, **fields: Any) -> dict[str, Any]:
        """A valid event for my contact: applied, it would bump its version."""
        event = call_event(
            self.team.id,
            contact_id=self.mine,
            extraction={"custom_fields": {"budget": 7}, "tags": ["hot-lead"]},
        )
        event.update(fields)
        return event

    def publish(self, message: str) -> None:
        self.worker.redis.lpush(QUEUE, message)

    def idle(self) -> bool:
        """Nothing waits in the queue, in transit or unacknowledged."""
        client = self.worker.redis
        transit = sum(
            int(client.llen(key))
            for key in client.scan_iter(f"{QUEUE}.transit.*")
            if not key.endswith(b".alive")  # the heartbeat of a consumer's transit list
        )
        return client.llen(QUEUE) == 0 and client.hlen("unacked") == 0 and transit == 0

    def settle(self, done: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (done() and self.idle()):
            assert self.worker.process.poll() is None, self.log_tail()
            assert time.monotonic() < deadline, self.log_tail()
            time.sleep(0.05)

    def count(self, table: Table, *where: Any) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
            )

    def log_tail(self) -> str:
        return self.worker.log.read_text(errors="replace")[-4000:]

    def apply_good_event(self) -> None:
        """The worker still serves: a good event is applied and bumps my contact's version."""
        before = self.version()
        event = self.event(  # newer than any call before it, with a new value
            occurred_at=datetime.now(UTC).isoformat(),
            extraction={"custom_fields": {"marker": uuid.uuid4().hex}},
        )
        self.publish(task_envelope([event]))
        applied = processed_events.c.event_id == event["event_id"]
        self.settle(lambda: self.count(processed_events, applied) == 1)
        assert self.version() == before + 1

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(contacts.c.version).where(contacts.c.id == self.mine)
                ).scalar_one()
            )


@pytest.fixture(scope="module")
def module_target(worker: Worker, postgres_url: str) -> Iterator[Target]:
    """Empty tables, then a contact in each of two teams, kept for the whole module.

    Each test compares the tables before and after its message, so it needs no
    fresh database (a truncation per test would double the module's time).
    """
    engine = make_engine(postgres_url)
    empty_tables(engine)
    with engine.begin() as conn:
        team = create_team(conn, name="Hostile")
        other = create_team(conn, name="Rival")
    mine = make_contact(engine, team.id, phone="+12025550100", timezone="America/Chicago")
    theirs = make_contact(engine, other.id, phone="+12025550100")
    yield Target(worker, engine, team, other, mine.id, theirs.id)
    engine.dispose()


@pytest.fixture
def target(module_target: Target) -> Iterator[Target]:
    """The module's target with no dead letters yet, and a live, idle worker."""
    assert module_target.worker.process.poll() is None, module_target.log_tail()
    assert module_target.idle()
    with module_target.engine.begin() as conn:
        conn.execute(delete(dead_letters))
    yield module_target
    assert module_target.idle()  # nothing of this test is still running


@dataclass(frozen=True)
class Hostile:
    """A Redis message and what its one dead letter must say and keep."""

    message: str
    reason: str
    kept: Any  # the payload as received (an event, or {"raw_body": text}, or the task's args)
    event_id: str | None = None
    part: str | None = None  # where in the dead letter's payload ``kept`` is


def as_task(event: Any, reason: str = "invalid_payload") -> Hostile:
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return Hostile(task_envelope([event]), reason, event, event_id)


def raw_in_event(event: dict[str, Any], marker_path: list[str], raw: str) -> Hostile:
    """The event with the JSON text ``raw`` (e.g. ``NaN``) at ``marker_path``, as sent."""
    marked = json.loads(json.dumps(event))
    slot = marked
    for key in marker_path[:-1]:
        slot = slot.setdefault(key, {})
    slot[marker_path[-1]] = "@RAW@"
    body = json.dumps([[marked], {}, EMBED]).replace('"@RAW@"', raw)
    sent = json.loads(body)[0][0]
    return Hostile(envelope(body.encode()), "invalid_payload", sent, event["event_id"])


def raw_body(body: bytes) -> Hostile:
    """A message whose body no JSON reader takes: parked with its text as received."""
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return Hostile(envelope(body), "invalid_payload", {"raw_body": text})


def not_a_task_body(body: bytes, task: str) -> Hostile:
    """A JSON body that is not protocol 2's ``[args, kwargs, embed]``."""
    decoded = json.loads(body) if body else ""
    return Hostile(envelope(body, task), "invalid_payload", decoded, part="body")


def without(event: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in names}


def extraction(t: Target, **fields: Any) -> dict[str, Any]:
    return t.event(extraction=fields)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _event_body(t: Target) -> bytes:
    return task_body([t.event()])


# (name, the hostile message built for a target)
WORKER_CASES: list[tuple[str, Callable[[Target], Hostile]]] = [
    # payloads that are not JSON, or not a task's arguments
    ("not-json", lambda t: raw_body(b"{this is not json")),
    ("truncated-json", lambda t: raw_body(_event_body(t)[:-9])),
    ("event-is-a-string", lambda t: as_task("call.completed")),
    ("event-is-null", lambda t: as_task(None)),
    ("event-is-a-list", lambda t: as_task([t.event()])),
    (
        "no-arguments",
        lambda t: Hostile(
            envelope(task_body([])),
            "invalid_payload",
            {"args": [], "kwargs": {}},
        ),
    ),
    (
        "two-arguments",
        lambda t: Hostile(task_envelope([1, 2]), "invalid_payload", {"args": [1, 2], "kwargs": {}}),
    ),
    (
        "keyword-argument",
        lambda t: Hostile(
            envelope(task_body([], {"event": 1})),
            "invalid_payload",
            {"args": [], "kwargs": {"event": 1}},
        ),
    ),
    (
        "batch-of-a-dict",
        lambda t: Hostile(
            task_envelope([{"a": 1}], TASK_APPLY_BATCH),
            "invalid_payload",
            {"args": [{"a": 1}], "kwargs": {}},
        ),
    ),
    # message bodies that are JSON but not a task's [args, kwargs, embed]
    *[
        (
            f"{kind}-body-{body.decode()[:12]}",
            lambda t, body=body, task=task: not_a_task_body(body, task),
        )
        for kind, task in (("event", TASK_APPLY), ("batch", TASK_APPLY_BATCH))
        for body in (
            b"",
            b"[]",
            b"null",
            b"42",
            b'"abc"',
            b"{}",
            b'{"args": [], "kwargs": {}}',
            b"[1, 2]",
            b"[[1], {}, {}, {}]",
            b"[1, {}, {}]",
            b"[[], [], {}]",
            b"[[1], {}, 5]",
        )
    ],
    (
        "batch-of-501-events",
        lambda t: Hostile(
            task_envelope([[t.event() for _ in range(501)]], TASK_APPLY_BATCH),
            "invalid_payload",
            501,
            part="args",
        ),
    ),
    # wrong types
    ("team-id-number", lambda t: as_task(t.event(team_id=5))),
    ("event-id-number", lambda t: as_task(t.event(event_id=12345))),
    ("schema-version-string", lambda t: as_task(t.event(schema_version="1"))),
    ("schema-version-true", lambda t: as_task(t.event(schema_version=True))),
    ("occurred-at-number", lambda t: as_task(t.event(occurred_at=1_700_000_000))),
    ("occurred-at-naive", lambda t: as_task(t.event(occurred_at="2026-11-20T15:04:05"))),
    ("outcome-unknown", lambda t: as_task(t.event(outcome="hung_up_angrily"))),
    ("extraction-string", lambda t: as_task(t.event(extraction="budget: 5"))),
    ("custom-fields-list", lambda t: as_task(extraction(t, custom_fields=[1, 2]))),
    ("tags-string", lambda t: as_task(extraction(t, tags="hot-lead"))),
    ("do-not-call-string", lambda t: as_task(extraction(t, do_not_call="yes"))),
    (
        "confidence-string",
        lambda t: as_task(extraction(t, custom_fields={"b": {"value": 1, "confidence": "high"}})),
    ),
    ("unknown-field", lambda t: as_task(t.event(priority="urgent"))),
    # missing fields
    *[
        (f"missing-{name}", lambda t, name=name: as_task(without(t.event(), name)))
        for name in (
            "event_id",
            "type",
            "schema_version",
            "team_id",
            "call_id",
            "occurred_at",
            "outcome",
        )
    ],
    ("missing-contact-id-and-phone", lambda t: as_task(without(t.event(), "contact_id"))),
    ("empty-object", lambda t: as_task({})),
    # deeply nested custom fields and 10,000 keys
    ("custom-nested-21-objects", lambda t: as_task(extraction(t, custom_fields={"d": _deep(21)}))),
    (
        "custom-nested-in-a-value",
        lambda t: as_task(extraction(t, custom_fields={"d": {"value": _deep(30)}})),
    ),
    ("contact-field-nested-30", lambda t: as_task(extraction(t, contact={"blob": _deep(30)}))),
    ("body-nested-100000-deep", lambda t: raw_body(b"[" * 100_000 + b"]" * 100_000)),
    (
        "custom-10000-keys",
        lambda t: as_task(extraction(t, custom_fields={f"k{i}": i for i in range(10_000)})),
    ),
    (
        "event-10000-unknown-keys",
        lambda t: as_task({**t.event(), **{f"k{i}": i for i in range(10_000)}}),
    ),
    ("tags-10000", lambda t: as_task(extraction(t, tags=[f"t{i}" for i in range(10_000)]))),
    # NUL bytes and text that is not Unicode
    ("escaped-nul-in-call-id", lambda t: as_task(t.event(call_id="call\x00nul"))),
    ("escaped-nul-in-custom-key", lambda t: as_task(extraction(t, custom_fields={"a\x00": 1}))),
    ("escaped-nul-in-summary", lambda t: as_task(extraction(t, summary="hello\x00"))),
    ("lone-surrogate-in-a-tag", lambda t: as_task(extraction(t, tags=["\ud800"]))),
    (
        "raw-nul-byte-in-body",
        lambda t: raw_body(_event_body(t).replace(b'"call_', b'"call\x00_', 1)),
    ),
    (
        "invalid-utf8-in-body",
        lambda t: raw_body(_event_body(t).replace(b'"call_', b'"call\xff\xfe_', 1)),
    ),
    (
        "overlong-utf8-nul-in-body",
        lambda t: raw_body(_event_body(t).replace(b'"call_', b'"call\xc0\x80_', 1)),
    ),
    # huge integers, NaN and Infinity
    (
        "schema-version-10**400",
        lambda t: as_task(t.event(schema_version=10**400), "unsupported_schema_version"),
    ),
    (
        "schema-version-2**64",
        lambda t: as_task(t.event(schema_version=2**64), "unsupported_schema_version"),
    ),
    ("duration-2**64", lambda t: as_task(t.event(duration_seconds=2**64))),
    ("duration-10**400", lambda t: as_task(t.event(duration_seconds=10**400))),
    ("custom-10**400", lambda t: as_task(extraction(t, custom_fields={"n": 10**400}))),
    (
        "custom-2**64",
        lambda t: as_task(extraction(t, custom_fields={"n": {"value": 2**64, "confidence": 0.9}})),
    ),
    ("custom-below-int64", lambda t: as_task(extraction(t, custom_fields={"n": [-(2**63) - 1]}))),
    ("contact-field-10**400", lambda t: as_task(extraction(t, contact={"age": 10**400}))),
    ("unknown-field-10**400", lambda t: as_task(t.event(score=10**400))),
    (
        "integer-of-5000-digits",
        lambda t: raw_body(
            _event_body(t).replace(b'"schema_version": 1', b'"schema_version": ' + b"1" * 5000)
        ),
    ),
    ("custom-nan", lambda t: raw_in_event(t.event(), ["extraction", "custom_fields", "n"], "NaN")),
    (
        "custom-infinity",
        lambda t: raw_in_event(t.event(), ["extraction", "custom_fields", "n"], "Infinity"),
    ),
    (
        "custom-1e400",
        lambda t: raw_in_event(t.event(), ["extraction", "custom_fields", "n"], "1e400"),
    ),
    (
        "confidence-nan",
        lambda t: raw_in_event(
            t.event(), ["extraction", "custom_fields", "n"], '{"value": 1, "confidence": NaN}'
        ),
    ),
    ("duration-infinity", lambda t: raw_in_event(t.event(), ["duration_seconds"], "Infinity")),
    ("duration-nan", lambda t: raw_in_event(t.event(), ["duration_seconds"], "NaN")),
    (
        "contact-field-minus-infinity",
        lambda t: raw_in_event(t.event(), ["extraction", "contact", "x"], "-Infinity"),
    ),
    ("unknown-field-nan", lambda t: raw_in_event(t.event(), ["score"], "NaN")),
    # nearly valid phone numbers (the number called: it finds the contact)
    *[
        (
            f"phone-{phone}",
            lambda t, phone=phone: as_task(without(t.event(phone=phone), "contact_id")),
        )
        for phone in (
            "+1202555019",
            "+1 (202) 555-01999",
            "++12025550199",
            "+1 202 555 O199",
            "202-555-ABCD",
            "+999 202 555 0199",
            "",
        )
    ],
    # ids of other teams
    (
        "team-that-does-not-exist",
        lambda t: as_task(
            t.event(team_id="01a00000-0000-7000-8000-000000000000"), "contact_not_found"
        ),
    ),
    ("team-id-too-long", lambda t: as_task(t.event(team_id="t" * 201))),
    (
        "contact-of-another-team",
        lambda t: as_task(t.event(contact_id=t.theirs), "contact_not_found"),
    ),
    (
        "my-contact-as-another-team",
        lambda t: as_task(t.event(team_id=t.other_team.id), "contact_not_found"),
    ),
    ("sql-in-contact-id", lambda t: as_task(t.event(contact_id=SQL), "contact_not_found")),
    ("sql-in-team-id", lambda t: as_task(t.event(team_id="' OR '1'='1"), "contact_not_found")),
    (
        "contact-that-does-not-exist",
        lambda t: as_task(t.event(contact_id="ct_nope"), "contact_not_found"),
    ),
]


def _kept(payload: Any) -> Any:
    """A dead letter's payload as received: unstorable JSON is kept as its text."""
    if isinstance(payload, dict) and set(payload) == {"raw_json"}:
        return json.loads(payload["raw_json"])
    return payload


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # NaN == NaN as text


def assert_parked_alone(t: Target, hostile: Hostile, before: dict[str, list[Any]]) -> Any:
    """Exactly one dead letter, with the reason and the payload; nothing else changed."""
    with t.engine.connect() as conn:
        rows = conn.execute(select(dead_letters)).all()
    assert len(rows) == 1, [(r.reason, r.message) for r in rows]
    [letter] = rows
    assert letter.reason == hostile.reason, letter.message
    assert letter.message.strip()
    assert letter.attempts == 1
    assert letter.replayed_at is None
    if isinstance(letter.payload, dict) and letter.payload.get("truncated") is True:
        # Larger than a dead letter keeps (README, "Security"): the start of its JSON text.
        whole = json.dumps(hostile.kept, separators=(",", ":"))
        assert letter.payload["original_bytes"] == len(whole)
        assert whole.startswith(letter.payload["prefix"])
    else:
        kept = _kept(letter.payload)
        if hostile.part == "args":  # a batch too long to repeat here: its length
            kept = len(kept["args"][0])
        elif hostile.part is not None:
            kept = kept[hostile.part]
        assert _canonical(kept) == _canonical(hostile.kept)
    after = snapshot(t.engine)
    # The inbox may note the parked event (docs/design.md §2: outcome dead_lettered); nothing else.
    parked = [row for row in after["processed_events"] if row not in before["processed_events"]]
    after["processed_events"] = [r for r in after["processed_events"] if r not in parked]
    assert [(r["event_id"], r["outcome"], r["contact_id"]) for r in parked] in (
        [],
        [(hostile.event_id, "dead_lettered", None)],
    )
    assert after == before
    return letter


@pytest.mark.slow
@pytest.mark.parametrize("build", [b for _, b in WORKER_CASES], ids=[n for n, _ in WORKER_CASES])
def test_a_hostile_event_is_one_dead_letter_and_changes_nothing(
    target: Target, build: Callable[[Target], Hostile]
) -> None:
    hostile = build(target)
    before = snapshot(target.engine)
    version = target.version()
    target.publish(hostile.message)
    target.settle(lambda: target.count(dead_letters) >= 1)
    assert_parked_alone(target, hostile, before)
    assert target.version() == version


TEN_MB_PLACES: list[tuple[str, Callable[[Target], dict[str, Any]]]] = [
    ("summary", lambda t: extraction(t, summary="x" * TEN_MB)),
    ("custom-field-value", lambda t: extraction(t, custom_fields={"transcript": "x" * TEN_MB})),
    (
        "custom-field-evidence",
        lambda t: extraction(t, custom_fields={"b": {"value": 1, "evidence": "x" * TEN_MB}}),
    ),
    ("unknown-contact-field", lambda t: extraction(t, contact={"transcript": "x" * TEN_MB})),
    ("unknown-event-field", lambda t: t.event(transcript="x" * TEN_MB)),
    ("event-id", lambda t: t.event(event_id="e" * TEN_MB)),
]


@pytest.mark.slow
@pytest.mark.parametrize("build", [b for _, b in TEN_MB_PLACES], ids=[n for n, _ in TEN_MB_PLACES])
def test_a_10_mb_event_is_a_dead_letter_and_the_worker_serves_on(
    target: Target, build: Callable[[Target], dict[str, Any]]
) -> None:
    event = build(target)
    hostile = as_task(event)
    if len(str(event.get("event_id"))) > 200:  # too long to be an id: parked without one
        hostile = Hostile(hostile.message, hostile.reason, hostile.kept, None)
    assert len(hostile.message) > TEN_MB
    before = snapshot(target.engine)
    target.publish(hostile.message)
    target.settle(lambda: target.count(dead_letters) >= 1)
    letter = assert_parked_alone(target, hostile, before)
    assert len(letter.message) <= 2000
    target.apply_good_event()
    assert target.worker.process.poll() is None


NEARLY_VALID_IN_EVENTS: list[tuple[str, str]] = [
    ("timezone", "America/New_Yrok"),
    ("timezone", "UTC+25"),
    ("timezone", "localtime"),
    ("phone_secondary", "+1202555019"),
    ("phone_secondary", "++12025550199"),
    ("phone_secondary", "202-555-ABCD"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("field", "value"), NEARLY_VALID_IN_EVENTS, ids=[v for _, v in NEARLY_VALID_IN_EVENTS]
)
def test_a_nearly_valid_extracted_timezone_or_phone_is_skipped_and_named(
    target: Target, field: str, value: str
) -> None:
    """docs/design.md §4.2: an invalid extracted value is skipped and named in the history record's
    ``skipped``; the rest of the event applies. Here the rest changes nothing, so the
    contact keeps its version, and the event is not a dead letter."""
    event = target.event(outcome="no_answer", extraction={"contact": {field: value}})
    before = snapshot(target.engine)
    target.publish(task_envelope([event]))
    inbox = processed_events.c.event_id == event["event_id"]
    target.settle(lambda: target.count(processed_events, inbox) == 1)
    after = snapshot(target.engine)
    [record] = [r for r in after["contact_history"] if r not in before["contact_history"]]
    assert (record["event_id"], record["changes"]) == (event["event_id"], [])
    [skipped] = record["skipped"]
    assert (skipped["field"], skipped["value"]) == (field, value)
    assert skipped["reason"].startswith("invalid: ")
    [row] = [r for r in after["processed_events"] if r not in before["processed_events"]]
    assert (row["outcome"], row["contact_id"]) == ("no_change", target.mine)
    [call] = [r for r in after["calls"] if r not in before["calls"]]  # the ledger (§11)
    assert (call["event_id"], call["contact_id"]) == (event["event_id"], target.mine)
    for name in ("contact_history", "processed_events", "calls"):
        after[name] = before[name]
    read_only = ("call_count", "attempt_count", "last_called_at", "last_call_outcome")
    for contact in after["contacts"]:
        contact.update(dict.fromkeys(read_only))
    for contact in before["contacts"]:
        contact.update(dict.fromkeys(read_only))
    assert after == before  # the contact itself is untouched: same values, same version
    assert target.count(dead_letters) == 0


@pytest.mark.slow
def test_the_worker_survived_every_hostile_message(target: Target) -> None:
    target.apply_good_event()
    assert target.worker.process.poll() is None
    assert "WorkerLostError" not in target.worker.log.read_text(errors="replace")
