"""Typed custom fields end to end (issue 15 items 1, 2, 4, 5; docs/design.md §13), on
PostgreSQL and on SQLite.

- ``/api/crm/custom-fields``: define, list, read, change, delete; 409 on a key defined
  again and on a type change; 404 for another team's key; hostile bodies are 422 naming
  the field; at most 100 definitions a team.
- ``/api/crm/team-settings``: read and set ``undefined_custom_fields``, ``min_confidence``,
  ``calls_overwrite_people``; hostile values 422; one team's settings never touch another's.
- A person's write stores canonical values, and a value that does not convert is 422
  naming ``custom_fields.KEY``; with ``reject``, an undefined key too.
- A call's loose values are coerced by the merge, or skipped (``invalid_value``,
  ``undefined_field``) with the raw value in history, never a dead letter; the history
  shows the raw value beside the stored one; definitions are read once per batch.
- The extraction schema validates events built from it, and those events apply.
- ``contact-sync fields list|define|delete``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from sqlalchemy import Engine, event, select

from contact_sync.accounts.teams import Team
from contact_sync.db.tables import contact_history, dead_letters
from contact_sync.fields.definitions import MAX_DEFINITIONS
from tests.factories import apply_batch, call_event, contact_row, make_contact
from tests.test_api import CONTACTS, Api, _api, _client, assert_error, assert_validation_error
from tests.test_keys import (
    blank_url,  # noqa: F401 (a fixture, used by name)
    cli,
)

FIELDS = "/api/crm/custom-fields"
SETTINGS = "/api/crm/team-settings"
OPTIONS = [
    {"value": "solar", "label": "Solar", "aliases": ["pv", "solar panels"]},
    {"value": "wind", "label": "Wind"},
]
BUDGET = {"key": "budget", "label": "Budget", "type": "number", "min": 0}
INTEREST = {"key": "product_interest", "label": "Interest", "type": "select", "options": OPTIONS}
HOMEOWNER = {"key": "homeowner", "label": "Homeowner", "type": "boolean"}
CALLBACK = {"key": "callback_day", "label": "Callback", "type": "date", "aiExtractable": False}


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def define(api: Api, body: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
    response = api.post(FIELDS, body, key=key)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def send(api: Api, method: str, url: str, body: Any = None, key: str | None = None) -> Any:
    content = None if body is None else json.dumps(body)
    return api.client.request(method, url, content=content, headers=api.json_headers(key))


def history(api: Api, contact_id: str) -> list[dict[str, Any]]:
    response = api.get(f"{CONTACTS}/{contact_id}/history")
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["data"]
    return records


# --------------------------------------------------------------------------- definitions


def test_a_field_is_defined_listed_read_changed_and_deleted(api: Api) -> None:
    created = define(api, {**INTEREST, "description": "What they want", "aiExtractable": True})
    assert created["key"] == "product_interest"
    assert created["type"] == "select"
    assert created["options"][0] == {
        "value": "solar",
        "label": "Solar",
        "aliases": ["pv", "solar panels"],
    }
    define(api, BUDGET)
    listed = api.get(FIELDS).json()["data"]
    assert [f["key"] for f in listed] == ["product_interest", "budget"]
    assert api.get(f"{FIELDS}/budget").json()["min"] == 0
    grown = [*OPTIONS, {"value": "battery", "label": "Battery", "aliases": ["storage"]}]
    changed = send(api, "PATCH", f"{FIELDS}/product_interest", {"label": "Want", "options": grown})
    assert changed.status_code == 200, changed.text
    assert changed.json()["label"] == "Want"
    assert len(changed.json()["options"]) == 3
    contact = api.create(customFields={"product_interest": "storage"})
    assert contact["custom_fields"] == {"product_interest": "battery"}
    assert send(api, "DELETE", f"{FIELDS}/product_interest").status_code == 204
    assert_error(api.get(f"{FIELDS}/product_interest"), 404)
    kept = api.get(f"{CONTACTS}/{contact['id']}").json()["custom_fields"]
    assert kept == {"product_interest": "battery"}  # the definition went, not the values


def test_a_key_defined_again_or_a_type_change_is_409(api: Api) -> None:
    define(api, BUDGET)
    assert_error(api.post(FIELDS, BUDGET), 409)
    assert_error(api.post(FIELDS, {"key": "budget", "label": "B", "type": "text"}), 409)
    assert_error(send(api, "PATCH", f"{FIELDS}/budget", {"type": "text"}), 409)
    assert send(api, "PATCH", f"{FIELDS}/budget", {"type": "number"}).status_code == 200
    removal = send(api, "PATCH", f"{FIELDS}/budget", {"options": OPTIONS})
    assert_validation_error(removal, "options")
    define(api, INTEREST)
    dropped = send(api, "PATCH", f"{FIELDS}/product_interest", {"options": OPTIONS[:1]})
    assert_validation_error(dropped, "options")


def test_another_teams_field_is_404_and_each_team_defines_its_own(api: Api) -> None:
    define(api, BUDGET)
    other = api.other_key
    for method, body in (("GET", None), ("PATCH", {"label": "Mine"}), ("DELETE", None)):
        assert_error(send(api, method, f"{FIELDS}/budget", body, key=other), 404)
    assert api.get(FIELDS, key=other).json() == {"data": []}
    assert api.get(f"{FIELDS}/schema", key=other).json()["properties"] == {}
    define(
        api, {"key": "budget", "label": "Budget", "type": "text"}, key=other
    )  # the same key, another team's
    assert api.get(f"{FIELDS}/budget").json()["type"] == "number"
    assert api.get(f"{FIELDS}/budget", key=other).json()["type"] == "text"


HOSTILE_DEFINITIONS: list[tuple[Any, str]] = [
    ({**INTEREST, "options": [{"value": f"o{i}"} for i in range(5000)]}, "options"),
    ({**INTEREST, "options": [{"value": "a", "aliases": ["x"] * 10_000}]}, "options.0.aliases"),
    ({**INTEREST, "options": [{"value": "x" * 100_000}]}, "options.0.value"),
    ({**INTEREST, "options": "solar"}, "options"),
    ({**INTEREST, "options": [None]}, "options.0"),
    ({"key": "code", "label": "Code", "type": "text", "pattern": "(a+)+$"}, "pattern"),
    ({"key": "code", "label": "Code", "type": "text", "pattern": "^(a|aa)*$"}, "pattern"),
    ({"key": "code", "label": "Code", "type": "text", "pattern": "(x)\\1"}, "pattern"),
    ({"key": "code", "label": "Code", "type": "text", "pattern": "a" * 5000}, "pattern"),
    ({"key": "code", "label": "Code", "type": "text", "pattern": 7}, "pattern"),
    ({**BUDGET, "min": "0"}, "min"),
    ({**BUDGET, "min": True}, "min"),
    ({**BUDGET, "max": 2**64}, "max"),
    ({**BUDGET, "min": 10, "max": 1}, "min"),
    ({**BUDGET, "type": "currency"}, "type"),
    ({**BUDGET, "type": None}, "type"),
    ({**BUDGET, "label": ""}, "label"),
    ({**BUDGET, "label": ["Budget"]}, "label"),
    ({**BUDGET, "key": "no spaces"}, "key"),
    ({**BUDGET, "key": "k" * 65}, "key"),
    ({**BUDGET, "key": "schema"}, "key"),
    ({**BUDGET, "key": 7}, "key"),
    ({**BUDGET, "aiExtractable": "yes"}, "ai_extractable"),
    ({**BUDGET, "bogus": 1}, "bogus"),
    ({"label": "Budget"}, "key"),
    ([BUDGET], "body"),
]


@pytest.mark.parametrize(
    ("body", "field"), HOSTILE_DEFINITIONS, ids=[f for _, f in HOSTILE_DEFINITIONS]
)
def test_a_hostile_definition_is_422_naming_the_field_and_stores_nothing(
    api: Api, body: Any, field: str
) -> None:
    assert_validation_error(api.post(FIELDS, body), field)
    assert api.get(FIELDS).json() == {"data": []}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key": "b", "label": "B", "type": "number", "min": NaN}',
        b'{"min": 1' + b"1" * 10_000 + b"}",
    ],
)
def test_nan_and_10000_digit_numbers_in_a_definition_are_422(api: Api, raw: bytes) -> None:
    response = api.client.post(FIELDS, content=raw, headers=api.json_headers())
    assert response.status_code == 422, response.text
    assert api.get(FIELDS).json() == {"data": []}


def test_a_team_defines_at_most_100_fields(api: Api) -> None:
    for index in range(MAX_DEFINITIONS):
        define(api, {"key": f"f{index}", "label": f"F{index}", "type": "text"})
    assert_validation_error(
        api.post(FIELDS, {"key": "one_more", "label": "X", "type": "text"}), "key"
    )
    define(api, {"key": "f0", "label": "F", "type": "text"}, key=api.other_key)


# --------------------------------------------------------------------------- team settings


def test_team_settings_are_read_and_set_per_team(api: Api) -> None:
    defaults = {
        "undefined_custom_fields": "accept",
        "min_confidence": 0.5,
        "calls_overwrite_people": False,
        "duplicate_phones": "allow",
    }
    assert api.get(SETTINGS).json() == defaults
    changed = send(api, "PUT", SETTINGS, {"undefinedCustomFields": "reject", "minConfidence": 0.8})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        **defaults,
        "undefined_custom_fields": "reject",
        "min_confidence": 0.8,
    }
    again = send(
        api,
        "PUT",
        SETTINGS,
        {"calls_overwrite_people": True, "min_confidence": None, "duplicatePhones": "reject"},
    )
    assert again.json() == {
        "undefined_custom_fields": "reject",
        "min_confidence": 0.5,
        "calls_overwrite_people": True,
        "duplicate_phones": "reject",
    }
    assert api.get(SETTINGS, key=api.other_key).json() == defaults


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"undefinedCustomFields": "maybe"}, "undefined_custom_fields"),
        ({"undefined_custom_fields": None}, "undefined_custom_fields"),
        ({"minConfidence": 2}, "min_confidence"),
        ({"minConfidence": -0.1}, "min_confidence"),
        ({"minConfidence": "0.5"}, "min_confidence"),
        ({"minConfidence": True}, "min_confidence"),
        ({"minConfidence": 10**400}, "min_confidence"),
        ({"callsOverwritePeople": "true"}, "calls_overwrite_people"),
        ({"callsOverwritePeople": 1}, "calls_overwrite_people"),
        ({"ringTone": "loud", "teamId": "x"}, "ringTone"),
        ({"duplicatePhones": "maybe"}, "duplicate_phones"),
        ({"duplicate_phones": None}, "duplicate_phones"),
        ([], "body"),
    ],
)
def test_hostile_team_settings_are_422_naming_the_field_and_change_nothing(
    api: Api, body: Any, field: str
) -> None:
    before = api.get(SETTINGS).json()
    assert_validation_error(send(api, "PUT", SETTINGS, body), field)
    assert api.get(SETTINGS).json() == before


def test_nan_min_confidence_is_422(api: Api) -> None:
    response = api.client.put(
        SETTINGS, content=b'{"minConfidence": NaN}', headers=api.json_headers()
    )
    assert_validation_error(response, "min_confidence")


# --------------------------------------------------------------------------- a person's writes


def test_a_persons_values_are_stored_canonical_and_bad_ones_are_422_naming_them(api: Api) -> None:
    define(api, BUDGET)
    define(api, INTEREST)
    contact = api.create(customFields={"budget": "$7.5k", "product_interest": "PV", "free": "x"})
    assert contact["custom_fields"] == {"budget": 7500, "product_interest": "solar", "free": "x"}
    response = api.patch(
        contact["id"], {"customFields": {"budget": "a lot", "product_interest": "coal"}}
    )
    message = assert_validation_error(response, "custom_fields.budget")
    assert "number" in message
    assert "custom_fields.product_interest" in response.json()["details"]
    assert (
        api.patch(contact["id"], {"customFields": {"budget": "1.2M"}}).json()["custom_fields"][
            "budget"
        ]
        == 1_200_000
    )
    assert_validation_error(
        api.post(CONTACTS, {"firstName": "A", "lastName": "B", "customFields": {"budget": -1}}),
        "custom_fields.budget",
    )
    assert_validation_error(
        api.post(CONTACTS, {"firstName": "A", "lastName": "B", "customFields": {"budget": 10**30}}),
        "custom_fields",
    )


def test_with_reject_an_undefined_key_is_422_from_the_api(api: Api) -> None:
    define(api, BUDGET)
    assert send(api, "PUT", SETTINGS, {"undefinedCustomFields": "reject"}).status_code == 200
    response = api.post(
        CONTACTS, {"firstName": "A", "lastName": "B", "customFields": {"roof": "flat"}}
    )
    assert_validation_error(response, "custom_fields.roof")
    contact = api.create(customFields={"budget": "7k"})
    assert_validation_error(
        api.patch(contact["id"], {"customFields": {"roof": "flat"}}), "custom_fields.roof"
    )
    # The other team accepts undefined keys (the default).
    assert (
        api.post(
            CONTACTS,
            {"firstName": "A", "lastName": "B", "customFields": {"roof": "flat"}},
            key=api.other_key,
        ).status_code
        == 201
    )


# --------------------------------------------------------------------------- a call's values


def _loose_event(team_id: str, contact_id: str, **fields: Any) -> dict[str, Any]:
    extraction = {
        "custom_fields": {
            "budget": {"value": "$7.5k", "confidence": 0.9, "evidence": "seventy-five hundred"},
            "homeowner": "YES",
            "product_interest": "Solar panels",
            "callback_day": "not sure",
        }
    }
    return call_event(team_id, contact_id=contact_id, extraction=extraction, **fields)


def test_a_calls_loose_values_are_coerced_or_skipped_with_the_raw_value_in_history(
    api: Api,
) -> None:
    for body in (BUDGET, INTEREST, HOMEOWNER, CALLBACK):
        define(api, body)
    contact = make_contact(api.engine, api.team.id)
    [outcome] = apply_batch(api.engine, [_loose_event(api.team.id, contact.id)])
    assert outcome.outcome == "applied"
    row = contact_row(api.engine, contact.id)
    assert row.custom_fields == {"budget": 7500, "homeowner": True, "product_interest": "solar"}
    record = history(api, contact.id)[0]
    changes = {c["field"]: c for c in record["changes"] if c["field"].startswith("custom_fields.")}
    assert changes["custom_fields.budget"] == {
        "field": "custom_fields.budget",
        "old": None,
        "new": 7500,
        "raw": "$7.5k",
    }
    assert changes["custom_fields.homeowner"]["raw"] == "YES"
    assert changes["custom_fields.product_interest"] == {
        "field": "custom_fields.product_interest",
        "old": None,
        "new": "solar",
        "raw": "Solar panels",
    }
    assert record["skipped"] == [
        {"field": "custom_fields.callback_day", "value": "not sure", "reason": "invalid_value"}
    ]
    assert row.provenance["custom_fields.budget"]["confidence"] == 0.9
    with api.engine.connect() as conn:
        assert conn.execute(select(dead_letters)).all() == []


def test_a_canonical_value_from_a_call_records_no_raw_value(api: Api) -> None:
    define(api, BUDGET)
    contact = make_contact(api.engine, api.team.id)
    event = call_event(
        api.team.id, contact_id=contact.id, extraction={"custom_fields": {"budget": 7000}}
    )
    apply_batch(api.engine, [event])
    [change] = [
        c for c in history(api, contact.id)[0]["changes"] if c["field"] == "custom_fields.budget"
    ]
    assert change == {"field": "custom_fields.budget", "old": None, "new": 7000}


def test_a_new_contact_from_a_call_shows_raw_values_too(api: Api) -> None:
    define(api, BUDGET)
    event = call_event(
        api.team.id, phone="+12025550123", extraction={"custom_fields": {"budget": "7k"}}
    )
    [outcome] = apply_batch(api.engine, [event])
    assert outcome.contact_id is not None
    [record] = history(api, outcome.contact_id)
    [change] = [c for c in record["changes"] if c["field"] == "custom_fields.budget"]
    assert (change["new"], change["raw"]) == (7000, "7k")


def test_people_win_and_time_order_hold_for_coerced_values(api: Api) -> None:
    define(api, BUDGET)
    contact = make_contact(api.engine, api.team.id, custom_fields={"budget": "5k"})
    assert contact.custom_fields == {"budget": 5000}
    late = call_event(
        api.team.id, contact_id=contact.id, extraction={"custom_fields": {"budget": "9k"}}
    )
    apply_batch(api.engine, [late])
    assert contact_row(api.engine, contact.id).custom_fields == {"budget": 5000}
    assert history(api, contact.id)[0]["skipped"] == [
        {"field": "custom_fields.budget", "value": "9k", "reason": "set_by_person"}
    ]
    other = make_contact(api.engine, api.team.id)
    newer = call_event(
        api.team.id,
        contact_id=other.id,
        minutes=10,
        extraction={"custom_fields": {"budget": "$2k"}},
    )
    older = call_event(
        api.team.id, contact_id=other.id, minutes=1, extraction={"custom_fields": {"budget": "1k"}}
    )
    apply_batch(api.engine, [newer])
    apply_batch(api.engine, [older])
    assert contact_row(api.engine, other.id).custom_fields == {"budget": 2000}


def test_with_reject_a_calls_undefined_key_is_skipped_not_dead_lettered(api: Api) -> None:
    define(api, BUDGET)
    send(api, "PUT", SETTINGS, {"undefinedCustomFields": "reject"})
    contact = make_contact(api.engine, api.team.id)
    event = call_event(
        api.team.id,
        contact_id=contact.id,
        extraction={"custom_fields": {"budget": "7k", "roof": "flat"}},
    )
    [outcome] = apply_batch(api.engine, [event])
    assert outcome.outcome == "applied"
    assert contact_row(api.engine, contact.id).custom_fields == {"budget": 7000}
    assert history(api, contact.id)[0]["skipped"] == [
        {"field": "custom_fields.roof", "value": "flat", "reason": "undefined_field"}
    ]


def test_a_batch_reads_the_definitions_once_whatever_its_size(api: Api) -> None:
    define(api, BUDGET)
    define(api, BUDGET, key=api.other_key)
    contacts = [make_contact(api.engine, api.team.id) for _ in range(5)]
    others = [make_contact(api.engine, api.other_team.id) for _ in range(5)]
    events = [
        call_event(c.team_id, contact_id=c.id, extraction={"custom_fields": {"budget": f"{i}k"}})
        for i, c in enumerate(contacts + others)
    ]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "custom_field_definitions" in statement:
            statements.append(statement)

    event.listen(api.engine, "before_cursor_execute", seen)
    try:
        outcomes = apply_batch(api.engine, events)
    finally:
        event.remove(api.engine, "before_cursor_execute", seen)
    assert {o.outcome for o in outcomes} == {"applied"}
    assert len(statements) == 1
    assert contact_row(api.engine, others[4].id).custom_fields == {"budget": 9000}
    statements.clear()
    event.listen(api.engine, "before_cursor_execute", seen)
    try:
        apply_batch(api.engine, [call_event(api.team.id, contact_id=contacts[0].id)])
    finally:
        event.remove(api.engine, "before_cursor_execute", seen)
    assert statements == []  # no custom fields extracted: no query at all


# --------------------------------------------------------------------------- the extraction schema


def _sample(prop: dict[str, Any]) -> Any:
    """A value an extractor could give for one property of the schema."""
    typed = prop["anyOf"][0]
    if "enum" in typed:
        return typed["enum"][-1]
    if typed["type"] == "array":
        return typed["items"]["enum"][:2]
    return {
        "number": typed.get("minimum", 0) + 1.5,
        "integer": typed.get("minimum", 0) + 2,
        "boolean": True,
        "string": {
            "date": "2026-12-24",
            "date-time": "2026-12-24T15:00:00-05:00",
            "email": "ada@example.com",
            "uri": "https://example.com/x",
        }.get(typed.get("format", ""), "AB-1234" if "pattern" in typed else "+12025550188"),
    }[typed["type"]]


def test_events_built_from_the_extraction_schema_validate_and_apply(api: Api) -> None:
    for body in (
        BUDGET,
        INTEREST,
        HOMEOWNER,
        CALLBACK,
        {"key": "systems", "label": "Systems", "type": "multi_select", "options": OPTIONS},
        {"key": "panels", "label": "Panels", "type": "integer", "min": 1},
        {"key": "visit", "label": "Visit", "type": "datetime"},
        {"key": "work_email", "label": "Work email", "type": "email"},
        {"key": "mobile", "label": "Mobile", "type": "phone"},
        {"key": "site", "label": "Site", "type": "url"},
        {"key": "ref", "label": "Ref", "type": "text", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
    ):
        define(api, body)
    response = api.get(f"{FIELDS}/schema")
    assert response.status_code == 200, response.text
    schema = response.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "callback_day" not in schema["properties"]  # not aiExtractable
    values = {key: _sample(prop) for key, prop in schema["properties"].items()}
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    validator.validate(values)
    validator.validate(dict.fromkeys(values))  # null: not found in the call
    assert not validator.is_valid({**values, "invented": 1})
    assert not validator.is_valid({**values, "product_interest": "coal"})
    contact = make_contact(api.engine, api.team.id)
    extraction = {"custom_fields": values}
    [outcome] = apply_batch(
        api.engine, [call_event(api.team.id, contact_id=contact.id, extraction=extraction)]
    )
    assert outcome.outcome == "applied"
    stored = contact_row(api.engine, contact.id).custom_fields
    assert set(stored) == set(values)
    assert stored["visit"] == "2026-12-24T20:00:00+00:00"
    assert history(api, contact.id)[0]["skipped"] == []


# --------------------------------------------------------------------------- the CLI


def test_the_cli_defines_lists_and_deletes_a_teams_fields(
    database_url: str, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    team = api.team.id
    code, out, err = cli(
        database_url,
        capsys,
        "fields",
        "define",
        "--team",
        team,
        "--key",
        "product_interest",
        "--type",
        "select",
        "--label",
        "Interest",
        "--option",
        "solar:Solar:pv,solar panels",
        "--option",
        "wind",
    )
    assert code == 0, err
    assert json.loads(out)["options"][0]["aliases"] == ["pv", "solar panels"]
    code, out, err = cli(
        database_url,
        capsys,
        "fields",
        "define",
        "--team",
        team,
        "--key",
        "budget",
        "--type",
        "number",
        "--min",
        "0",
        "--max",
        "1e6",
    )
    assert code == 0, err
    code, out, err = cli(
        database_url,
        capsys,
        "fields",
        "define",
        "--team",
        team,
        "--key",
        "budget",
        "--type",
        "number",
    )
    assert code == 6
    assert "already defined" in err
    assert out == ""
    code, out, err = cli(
        database_url,
        capsys,
        "fields",
        "define",
        "--team",
        team,
        "--key",
        "code",
        "--type",
        "text",
        "--pattern",
        "(a+)+$",
    )
    assert code == 2
    assert "pattern" in err
    code, out, err = cli(database_url, capsys, "fields", "list", "--team", team)
    assert code == 0
    assert "product_interest" in out
    assert "solar,wind" in out
    code, out, err = cli(database_url, capsys, "fields", "list", "--team", team, "--json")
    assert [f["key"] for f in json.loads(out)] == ["product_interest", "budget"]
    code, out, err = cli(database_url, capsys, "fields", "delete", "--team", team, "budget")
    assert code == 0, err
    code, out, err = cli(
        database_url, capsys, "fields", "delete", "--team", api.other_team.id, "product_interest"
    )
    assert code == 3  # another team's key is not found
    assert [f["key"] for f in api.get(FIELDS).json()["data"]] == ["product_interest"]
    with api.engine.connect() as conn:
        assert conn.execute(select(contact_history)).all() == []


# --------------------------------------------------------------------------- migration 0006


def test_migration_0006_gives_existing_teams_accept_and_goes_back_and_forth(
    blank_url: str,  # noqa: F811 (the fixture imported above)
) -> None:
    from alembic import command
    from sqlalchemy import inspect, text

    from contact_sync.db.engine import make_engine
    from contact_sync.db.migrate import alembic_config, upgrade
    from contact_sync.db.tables import teams

    engine = make_engine(blank_url)
    try:
        upgrade(engine, "0005")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO teams (id, name, name_key, default_region, "
                    "calls_overwrite_people, created_at) "
                    "VALUES ('t1', 'Old', 'k1', 'US', false, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(select(teams.c.undefined_custom_fields)).scalar_one() == "accept"
        assert "custom_field_definitions" in inspect(engine).get_table_names()
        config = alembic_config(engine)
        command.downgrade(config, "0005")
        assert "custom_field_definitions" not in inspect(engine).get_table_names()
        columns = {c["name"] for c in inspect(engine).get_columns("teams")}
        assert "undefined_custom_fields" not in columns
        upgrade(engine)
        assert "custom_field_definitions" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


HOSTILE_PATCHES: list[tuple[Any, str]] = [
    ({"options": [*OPTIONS, *({"value": f"o{i}"} for i in range(5000))]}, "options"),
    ({"options": [{"value": "solar", "aliases": ["wind"]}, {"value": "wind"}]}, "options"),
    ({"options": None}, "options"),
    ({"pattern": "(a+)+$"}, "pattern"),
    ({"min": 1}, "min"),
    ({"label": None}, "label"),
    ({"label": "x" * 101}, "label"),
    ({"description": 7}, "description"),
    ({"aiExtractable": None}, "ai_extractable"),
    ({"key": "other"}, "key"),
    ({"bogus": True}, "bogus"),
    ("options", "body"),
]


@pytest.mark.parametrize(("body", "field"), HOSTILE_PATCHES, ids=[f for _, f in HOSTILE_PATCHES])
def test_a_hostile_change_is_422_naming_the_field_and_changes_nothing(
    api: Api, body: Any, field: str
) -> None:
    before = define(api, INTEREST)
    assert_validation_error(send(api, "PATCH", f"{FIELDS}/product_interest", body), field)
    assert api.get(f"{FIELDS}/product_interest").json() == before


@pytest.mark.parametrize("key", ["k" * 10_000, "nul%00x", "%00", "ключ", "schema2", "a%2Fb"])
def test_a_hostile_key_in_the_path_is_404_on_every_field_route(api: Api, key: str) -> None:
    for method, body in (("GET", None), ("PATCH", {"label": "X"}), ("DELETE", None)):
        response = send(api, method, f"{FIELDS}/{key}", body)
        assert response.status_code in (404, 422), response.text
        assert response.status_code != 500
