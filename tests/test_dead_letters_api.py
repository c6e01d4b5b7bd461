"""Dead letters over HTTP and from the CLI, team by team (issue 12 item 4).

- ``GET /api/crm/dead-letters?reason=&open=&limit=&offset=``: the key's team's letters,
  newest first, ``{data, total, limit, offset}``; an unknown parameter is 422 naming it.
- ``GET /api/crm/dead-letters/{id}``, ``POST …/{id}/replay`` (the CLI's apply path; an
  erased or discarded letter is 409) and ``POST …/{id}/discard`` (closed with the key's
  id and the time, never deleted; discarding again answers the same).
- A letter's ``attempt_log`` keeps every delivery and replay, so a replay never
  overwrites the reason and message the event was parked for.
- Another team's letters, and letters whose team could not be read (operators'), are
  404 over HTTP exactly as ids that do not exist.
- CLI: ``dead-letters list --team --reason --open``, ``replay --event-id`` (``--team``
  needed when the id is in several teams), ``discard ID``.

On PostgreSQL and on SQLite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from sqlalchemy import Engine, Text, cast, select, update

from contact_sync.accounts.teams import Team, issue_api_key
from contact_sync.calls.apply import apply_payloads
from contact_sync.calls.events import Reason
from contact_sync.cli.main import main
from contact_sync.db.tables import contacts, dead_letters
from contact_sync.ops import dead_letters as letters_module
from contact_sync.ops.dead_letters import ERASED_MESSAGE, LOG_LIMIT
from contact_sync.settings import get_settings
from tests.factories import call_event, make_contact
from tests.test_api import Api, _api, _client, assert_error, assert_validation_error

LETTERS = "/api/crm/dead-letters"
NOT_FOUND = "Dead letter not found"
PHONE = "+12025550143"
LETTER_FIELDS = {
    "id",
    "event_id",
    "team_id",
    "reason",
    "message",
    "payload",
    "first_seen_at",
    "last_seen_at",
    "attempts",
    "replayed_at",
    "erased_at",
    "discarded_at",
    "discarded_by",
    "attempt_log",
    "open",
}
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def park(engine: Engine, payload: Any, *, minutes: int = 0) -> str:
    """Apply ``payload`` at ``T0 + minutes``; it must be dead-lettered. Its letter's id."""
    with engine.begin() as conn:
        [outcome] = apply_payloads(conn, [payload], now=T0 + timedelta(minutes=minutes))
    assert outcome.outcome == "dead_lettered", outcome
    team = (
        dead_letters.c.team_id.is_(None)
        if outcome.team_id is None
        else dead_letters.c.team_id == outcome.team_id
    )
    with engine.connect() as conn:
        return str(
            conn.execute(
                select(dead_letters.c.id).where(
                    dead_letters.c.event_id == outcome.event_id,
                    dead_letters.c.discarded_at.is_(None),
                    team,
                )
            ).scalar_one()
        )


def lost(team_id: str, **fields: Any) -> dict[str, Any]:
    """An event for a contact the team does not have: ``contact_not_found``."""
    return call_event(team_id, contact_id=f"ct_missing_{uuid.uuid4().hex[:8]}", **fields)


def row(engine: Engine, letter_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(dead_letters).where(dead_letters.c.id == letter_id)).one()


def row_text(engine: Engine, letter_id: str) -> str:
    columns = [cast(column, Text) for column in dead_letters.c]
    with engine.connect() as conn:
        values = conn.execute(select(*columns).where(dead_letters.c.id == letter_id)).one()
    return " ".join(str(value) for value in values)


def ambiguous(api: Api) -> tuple[dict[str, Any], str, str]:
    """An event parked as ``ambiguous_contact`` (two contacts have its number), its letter,
    and the id of the twin whose number, once removed, lets the event apply."""
    make_contact(api.engine, api.team.id, phone=PHONE)
    twin = make_contact(api.engine, api.team.id, first_name="Grace", phone=PHONE)
    event = call_event(api.team.id, phone=PHONE, extraction={"custom_fields": {"budget": 7}})
    return event, park(api.engine, event), twin.id


def replay(api: Api, letter_id: str, **kwargs: Any) -> Any:
    return api.client.post(f"{LETTERS}/{letter_id}/replay", headers=api.auth(), **kwargs)


def discard(api: Api, letter_id: str, *, key: str | None = None) -> Any:
    return api.client.post(f"{LETTERS}/{letter_id}/discard", headers=api.auth(key))


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [letter["id"] for letter in response.json()["data"]]


# --------------------------------------------------------------------------- list and get


def test_the_list_is_the_teams_letters_newest_first_with_total_limit_and_offset(
    api: Api,
) -> None:
    mine = [park(api.engine, lost(api.team.id), minutes=m) for m in (1, 3, 2)]
    park(api.engine, lost(api.other_team.id), minutes=4)
    no_team = call_event("", event_id="evt_no_team")
    del no_team["team_id"]
    park(api.engine, no_team, minutes=5)
    newest_first = [mine[1], mine[2], mine[0]]

    response = api.get(LETTERS)
    assert ids(response) == newest_first
    page = response.json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 50, 0)
    letter = page["data"][0]
    assert set(letter) == LETTER_FIELDS
    assert (letter["team_id"], letter["reason"], letter["attempts"], letter["open"]) == (
        api.team.id,
        "contact_not_found",
        1,
        True,
    )
    assert letter["payload"]["team_id"] == api.team.id

    second = api.get(LETTERS, params={"limit": "1", "offset": "1"})
    assert ids(second) == [mine[2]]
    assert (second.json()["total"], second.json()["limit"], second.json()["offset"]) == (3, 1, 1)
    assert ids(api.get(LETTERS, params={"offset": "3"})) == []
    # The other team sees its own letter only; the letter of no team is nobody's.
    assert len(ids(api.get(LETTERS, key=api.other_key))) == 1


def test_reason_and_open_filter_the_list(api: Api) -> None:
    future = park(
        api.engine,
        lost(api.team.id, occurred_at=(T0 + timedelta(hours=1)).isoformat()),
    )
    invalid = park(api.engine, call_event(api.team.id, schema_version=2), minutes=1)
    gone = park(api.engine, lost(api.team.id), minutes=2)
    _, fixable, twin = ambiguous(api)
    assert api.patch(twin, {"phone": None}).status_code == 200
    assert replay(api, fixable).json()["outcome"] == "applied"
    assert discard(api, gone).status_code == 200

    assert set(ids(api.get(LETTERS, params={"open": "true"}))) == {future, invalid}
    assert set(ids(api.get(LETTERS, params={"open": "false"}))) == {fixable, gone}
    assert ids(api.get(LETTERS, params={"reason": "occurred_in_future"})) == [future]
    assert ids(api.get(LETTERS, params={"reason": "contact_not_found", "open": "true"})) == []
    listed = api.get(LETTERS, params={"reason": "unsupported_schema_version", "open": "true"})
    assert ids(listed) == [invalid]
    assert listed.json()["total"] == 1


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"tag": "vip"}, "tag"),
        ({"status": "open"}, "status"),
        ({"reason": "exploded"}, "reason"),
        ({"reason": ""}, "reason"),
        ({"open": "maybe"}, "open"),
        ({"open": "1"}, "open"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": str(10**400)}, "offset"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else value,
)
def test_an_unknown_or_bad_query_parameter_is_422_naming_it(
    api: Api, params: dict[str, str], named: str
) -> None:
    park(api.engine, lost(api.team.id))
    response = api.get(LETTERS, params=params)
    assert_validation_error(response, named)
    assert set(response.json()["details"]) == {named}


def test_the_list_of_another_team_is_403_and_of_the_own_team_200(api: Api) -> None:
    for name in ("teamId", "team_id"):
        assert_error(api.get(LETTERS, params={name: api.other_team.id}), 403)
        assert_error(api.get(LETTERS, params={name: "no-such-team"}), 403)
        assert api.get(LETTERS, params={name: api.team.id}).status_code == 200


def test_a_letter_reads_back_with_its_payload_exactly_as_received(api: Api) -> None:
    event = lost(api.team.id, extraction={"summary": "naïve café ☕", "tags": ["x"]})
    letter_id = park(api.engine, event)
    response = api.get(f"{LETTERS}/{letter_id}")
    assert response.status_code == 200, response.text
    letter = response.json()
    assert set(letter) == LETTER_FIELDS
    assert letter["payload"] == event
    assert (letter["event_id"], letter["reason"]) == (event["event_id"], "contact_not_found")
    assert letter["message"].startswith("no contact ct_missing_")
    [delivery] = letter["attempt_log"]
    assert delivery == {
        "at": delivery["at"],
        "via": "delivery",
        "outcome": "dead_lettered",
        "reason": "contact_not_found",
        "message": letter["message"],
        "by": None,
    }
    assert datetime.fromisoformat(delivery["at"]) == T0


def test_other_teams_letters_and_letters_of_no_team_answer_as_unknown_ids_do(api: Api) -> None:
    theirs = park(api.engine, lost(api.other_team.id))
    nobodys = park(api.engine, {"event_id": "evt_no_team"})
    before = {letter_id: row_text(api.engine, letter_id) for letter_id in (theirs, nobodys)}
    unknown = str(uuid.uuid4())
    for method, suffix in (("GET", ""), ("POST", "/replay"), ("POST", "/discard")):
        answers = []
        for letter_id in (theirs, nobodys, unknown):
            response = api.client.request(
                method, f"{LETTERS}/{letter_id}{suffix}", headers=api.auth()
            )
            assert_error(response, 404, NOT_FOUND)
            answers.append(response.text)
        assert len(set(answers)) == 1, (method, suffix)
    assert {letter_id: row_text(api.engine, letter_id) for letter_id in before} == before


def test_the_openapi_document_describes_the_dead_letter_routes(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    listing = doc["paths"][LETTERS]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert list(params) == ["teamId", "reason", "open", "limit", "offset"]
    assert set(params["reason"]["enum"]) == set(get_args(Reason))
    assert params["open"]["type"] == "boolean"
    assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 100)
    for action in ("replay", "discard"):
        operation = doc["paths"][f"{LETTERS}/{{dead_letter_id}}/{action}"]["post"]
        assert {"200", "401", "403", "404", "409", "422", "429"} <= set(operation["responses"])


# --------------------------------------------------------------------------- replay


def test_a_replay_that_now_goes_through_closes_the_letter_and_keeps_why_it_was_parked(
    api: Api,
) -> None:
    _, letter_id, twin = ambiguous(api)
    parked = row(api.engine, letter_id)
    assert api.patch(twin, {"phone": None}).status_code == 200  # the team fixes its data

    response = replay(api, letter_id)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["outcome"], answer["reason"], answer["message"]) == ("applied", None, None)
    assert answer["version"] == 2
    with api.engine.connect() as conn:
        budget = conn.execute(
            select(contacts.c.custom_fields).where(contacts.c.id == answer["contact_id"])
        ).scalar_one()
    assert budget == {"budget": 7}
    letter = answer["dead_letter"]
    assert letter == api.get(f"{LETTERS}/{letter_id}").json()
    assert (letter["open"], letter["reason"], letter["message"]) == (
        False,
        "ambiguous_contact",
        parked.message,
    )
    assert letter["replayed_at"] is not None
    delivery, again = letter["attempt_log"]
    assert (delivery["via"], delivery["reason"], delivery["message"]) == (
        "delivery",
        "ambiguous_contact",
        parked.message,
    )
    assert again == {
        "at": letter["replayed_at"],
        "via": "replay",
        "outcome": "applied",
        "reason": None,
        "message": None,
        "by": api.key_id,
    }
    # Replaying a closed letter again finds the event applied: nothing changes twice.
    assert replay(api, letter_id).json()["outcome"] == "duplicate"


def test_a_replay_that_fails_again_keeps_the_first_reason_and_message_in_the_log(
    api: Api,
) -> None:
    """Parked for a time in the future (then), replayed (now it is past): the contact is
    not the team's. The letter's reason becomes the new one; the log keeps both."""
    letter_id = park(
        api.engine, lost(api.team.id, occurred_at=(T0 + timedelta(hours=1)).isoformat())
    )
    first = row(api.engine, letter_id)
    assert first.reason == "occurred_in_future"

    response = replay(api, letter_id)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["outcome"], answer["reason"]) == ("dead_lettered", "contact_not_found")
    assert answer["message"].startswith("no contact ct_missing_")
    letter = answer["dead_letter"]
    assert (letter["reason"], letter["attempts"], letter["open"]) == ("contact_not_found", 2, True)
    delivery, again = letter["attempt_log"]
    assert (delivery["reason"], delivery["message"]) == ("occurred_in_future", first.message)
    assert (again["via"], again["outcome"], again["reason"], again["by"]) == (
        "replay",
        "dead_lettered",
        "contact_not_found",
        api.key_id,
    )
    assert again["message"] == answer["message"]


def test_a_letter_parked_before_the_log_existed_keeps_its_reason_through_a_replay(
    api: Api,
) -> None:
    letter_id = park(
        api.engine, lost(api.team.id, occurred_at=(T0 + timedelta(hours=1)).isoformat())
    )
    with api.engine.begin() as conn:  # as migration 0004 leaves a letter of before
        conn.execute(update(dead_letters).values(attempt_log=[]))
    [seeded] = api.get(f"{LETTERS}/{letter_id}").json()["attempt_log"]
    assert (seeded["via"], seeded["reason"]) == ("delivery", "occurred_in_future")
    log = replay(api, letter_id).json()["dead_letter"]["attempt_log"]
    assert [entry["reason"] for entry in log] == ["occurred_in_future", "contact_not_found"]


def test_an_erased_letter_is_409_and_its_event_never_applies(api: Api) -> None:
    contact = api.create(phone=PHONE)
    letter_id = park(
        api.engine, call_event(api.team.id, contact_id=contact["id"], schema_version=2)
    )
    assert api.delete(contact["id"]).status_code == 204
    before = row_text(api.engine, letter_id)

    response = replay(api, letter_id)
    assert_error(response, 409)
    assert "erased" in response.json()["error"]
    assert "cannot be replayed" in response.json()["error"]
    assert row_text(api.engine, letter_id) == before
    assert api.get("/api/crm/contacts").json()["total"] == 0


def test_an_erasure_redacts_the_messages_of_the_letters_log_too(api: Api) -> None:
    _, letter_id, twin = ambiguous(api)
    assert replay(api, letter_id).json()["outcome"] == "dead_lettered"  # still two
    assert "2025550143" in row_text(api.engine, letter_id)  # the messages quote the number
    assert api.delete(twin).status_code == 204
    letter = api.get(f"{LETTERS}/{letter_id}").json()
    assert letter["erased_at"] is not None
    assert [entry["message"] for entry in letter["attempt_log"]] == [ERASED_MESSAGE] * 2
    assert [entry["reason"] for entry in letter["attempt_log"]] == ["ambiguous_contact"] * 2
    assert "2025550143" not in row_text(api.engine, letter_id)
    assert "555-0143" not in row_text(api.engine, letter_id)


def test_a_replay_takes_no_body(api: Api) -> None:
    letter_id = park(api.engine, lost(api.team.id))
    before = row_text(api.engine, letter_id)
    response = replay(api, letter_id, content=b'{"force": true}')
    assert_validation_error(response, "body")
    assert row_text(api.engine, letter_id) == before
    assert replay(api, letter_id, content=b"{}").status_code == 200


# --------------------------------------------------------------------------- discard


def test_discard_closes_the_letter_with_who_and_when_and_never_deletes_it(api: Api) -> None:
    event = lost(api.team.id)
    letter_id = park(api.engine, event)
    started = datetime.now(UTC)

    response = discard(api, letter_id)
    assert response.status_code == 200, response.text
    letter = response.json()
    assert (letter["open"], letter["discarded_by"], letter["payload"]) == (
        False,
        api.key_id,
        event,
    )
    when = datetime.fromisoformat(letter["discarded_at"])
    assert started <= when <= datetime.now(UTC)
    assert letter == api.get(f"{LETTERS}/{letter_id}").json()
    assert row(api.engine, letter_id).discarded_by == api.key_id
    assert ids(api.get(LETTERS, params={"open": "true"})) == []
    assert ids(api.get(LETTERS)) == [letter_id]  # kept

    # Again (a client's retry): the same answer; the first who and when stay.
    with api.engine.begin() as conn:
        other_key = issue_api_key(conn, team_id=api.team.id).api_key
    again = discard(api, letter_id, key=other_key)
    assert again.status_code == 200
    assert again.json() == letter

    refused = replay(api, letter_id)
    assert_error(refused, 409)
    assert "discarded" in refused.json()["error"]


def test_a_letter_whose_replay_went_through_cannot_be_discarded(api: Api) -> None:
    _, letter_id, twin = ambiguous(api)
    assert api.patch(twin, {"phone": None}).status_code == 200
    assert replay(api, letter_id).json()["outcome"] == "applied"
    before = row_text(api.engine, letter_id)
    response = discard(api, letter_id)
    assert_error(response, 409)
    assert "replayed" in response.json()["error"]
    assert row_text(api.engine, letter_id) == before


def test_an_erased_letter_can_be_discarded(api: Api) -> None:
    contact = api.create(phone=PHONE)
    letter_id = park(
        api.engine, call_event(api.team.id, contact_id=contact["id"], schema_version=2)
    )
    assert api.delete(contact["id"]).status_code == 204
    letter = discard(api, letter_id).json()
    assert (letter["open"], letter["erased_at"] is not None) == (False, True)


def test_a_redelivery_of_a_discarded_event_gets_a_letter_of_its_own(api: Api) -> None:
    event = lost(api.team.id)
    first = park(api.engine, event)
    assert discard(api, first).status_code == 200
    second = park(api.engine, event, minutes=1)
    assert second != first
    assert row(api.engine, first).attempts == 1
    assert ids(api.get(LETTERS, params={"open": "true"})) == [second]


# --------------------------------------------------------------------------- the log


def test_the_log_keeps_the_first_entry_and_the_latest_ones_and_counts_them_all(
    engine: Engine, team: Team
) -> None:
    deliveries = LOG_LIMIT + 10
    for n in range(deliveries):
        with engine.begin() as conn:
            letter_id = letters_module.record(
                conn,
                payload={"n": n},
                reason="invalid_payload" if n == 0 else "poison_message",
                message=f"delivery {n}",
                event_id="evt_again",
                team_id=team.id,
                now=T0 + timedelta(seconds=n),
            )
    stored = row(engine, letter_id)
    assert stored.attempts == deliveries
    log = stored.attempt_log
    assert len(log) == LOG_LIMIT
    assert log[0]["message"] == "delivery 0"
    assert log[0]["reason"] == "invalid_payload"
    assert [entry["message"] for entry in log[1:]] == [
        f"delivery {n}" for n in range(deliveries - LOG_LIMIT + 1, deliveries)
    ]


# --------------------------------------------------------------------------- CLI


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli_url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The event commands copy flags to the environment: put it back afterwards."""
    monkeypatch.setenv("CONTACT_SYNC_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def cli(cli_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run(["--database-url", cli_url, "dead-letters", *args], capsys)


def test_cli_list_filters_by_team_reason_and_open(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = park(api.engine, lost(api.team.id))
    closed = park(api.engine, lost(api.team.id), minutes=1)
    invalid = park(api.engine, call_event(api.team.id, schema_version=2), minutes=2)
    theirs = park(api.engine, lost(api.other_team.id), minutes=3)
    nobodys = park(api.engine, {"event_id": "evt_no_team"}, minutes=4)
    assert discard(api, closed).status_code == 200

    def listed(*flags: str) -> list[str]:
        code, out, err = cli(cli_url, capsys, "list", "--json", *flags)
        assert code == 0, err
        return [letter["id"] for letter in json.loads(out)]

    assert listed() == [nobodys, theirs, invalid, closed, gone]  # operators: every letter
    assert listed("--team", api.team.id) == [invalid, closed, gone]
    assert listed("--team", api.team.id, "--open") == [invalid, gone]
    assert listed("--team", api.team.id, "--reason", "contact_not_found", "--open") == [gone]
    assert listed("--reason", "contact_not_found") == [theirs, closed, gone]
    code, table, _ = cli(cli_url, capsys, "list", "--team", api.team.id)
    assert [line.split()[:3] for line in table.splitlines()] == [
        [invalid, "unsupported_schema_version", "open"],
        [closed, "contact_not_found", "discarded"],
        [gone, "contact_not_found", "open"],
    ]
    code, _, err = cli(cli_url, capsys, "list", "--reason", "exploded")
    assert code == 2
    [line] = err.splitlines()
    assert "--reason" in line


def test_cli_replay_by_event_id_needs_a_team_when_the_id_is_in_several(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = f"evt_{uuid.uuid4().hex}"
    mine = park(api.engine, lost(api.team.id, event_id=shared))
    theirs = park(api.engine, lost(api.other_team.id, event_id=shared))
    before = row_text(api.engine, theirs)

    code, out, err = cli(cli_url, capsys, "replay", "--event-id", shared)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line == (
        f"contact-sync: event id {shared} has dead letters in 2 teams: name one with --team"
    )
    assert row(api.engine, mine).attempts == 1

    code, out, _ = cli(cli_url, capsys, "replay", "--event-id", shared, "--team", api.team.id)
    assert code == 1  # still not found: replayed, and parked again
    assert out.startswith(f"{mine}: dead_lettered (contact_not_found")
    assert row(api.engine, mine).attempts == 2
    assert row_text(api.engine, theirs) == before

    code, out, err = cli(cli_url, capsys, "replay", "--event-id", "evt_nowhere")
    assert (code, out) == (3, "")
    assert err == "contact-sync: no dead letter of event evt_nowhere\n"


def test_cli_replay_by_event_id_takes_the_open_letter_of_the_event(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Discarded, then delivered again: the open letter is the one replayed."""
    event = lost(api.team.id)
    first = park(api.engine, event)
    assert discard(api, first).status_code == 200
    second = park(api.engine, event, minutes=1)
    code, out, _ = cli(cli_url, capsys, "replay", "--event-id", event["event_id"])
    assert code == 1
    assert out.startswith(f"{second}: dead_lettered")
    assert row(api.engine, first).attempts == 1


def test_cli_replay_is_logged_with_the_operator_and_refuses_a_discarded_letter(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letter_id = park(api.engine, lost(api.team.id))
    assert cli(cli_url, capsys, "replay", letter_id)[0] == 1
    replayed = row(api.engine, letter_id).attempt_log[-1]
    assert (replayed["via"], replayed["by"].split(":")[0]) == ("replay", "cli")

    assert discard(api, letter_id).status_code == 200
    before = row_text(api.engine, letter_id)
    code, out, err = cli(cli_url, capsys, "replay", letter_id)
    assert (code, out) == (3, "")
    [line] = err.splitlines()
    assert "discarded" in line
    assert "cannot be replayed" in line
    # --all replays open letters only: a discarded one is not among them.
    code, out, _ = cli(cli_url, capsys, "replay", "--all")
    assert (code, out) == (0, "")
    assert row_text(api.engine, letter_id) == before


def test_cli_discard_closes_a_letter_with_the_operator_and_says_so_once(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letter_id = park(api.engine, lost(api.other_team.id))
    code, out, err = cli(cli_url, capsys, "discard", letter_id)
    assert code == 0, err
    stored = row(api.engine, letter_id)
    assert stored.discarded_by.startswith("cli")
    assert (
        out
        == f"{letter_id}: discarded at {stored.discarded_at.isoformat()} by {stored.discarded_by}\n"
    )
    code, out, _ = cli(cli_url, capsys, "discard", letter_id)
    assert code == 0
    assert out.startswith(f"{letter_id}: already discarded at {stored.discarded_at.isoformat()}")
    assert row(api.engine, letter_id).discarded_at == stored.discarded_at

    for args in (["no-such-letter"], [letter_id, "--team", api.team.id]):
        code, out, err = cli(cli_url, capsys, "discard", *args)
        assert (code, out) == (3, ""), args
        [line] = err.splitlines()
        assert line.startswith("contact-sync: not found")


def test_cli_discard_of_a_replayed_letter_is_one_line_and_exit_3(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, letter_id, twin = ambiguous(api)
    assert api.patch(twin, {"phone": None}).status_code == 200
    assert cli(cli_url, capsys, "replay", letter_id)[0] == 0
    code, out, err = cli(cli_url, capsys, "discard", letter_id)
    assert (code, out) == (3, "")
    [line] = err.splitlines()
    assert "replayed successfully" in line
