"""A team's calling policy stored, over HTTP and from the CLI (docs/design.md §12; issue 14
item 2).

- ``save_policy``: one history row per change (the defaults as ``old`` the first time), none
  when nothing changed; ``policy_changes`` newest first, paged.
- ``GET /api/crm/calling-policy``: the defaults with ``updated_at``/``updated_by`` null until
  changed; ``PUT`` replaces it (partial and nested-partial bodies keep defaults), 422 naming
  the key, a read key 403; ``GET …/history`` ``{data, total, limit, offset}`` newest first.
- Isolation: another team's key never sees nor changes it; ``teamId`` of another team is 403.
- CLI ``policy show|set|history`` in a process of its own: ``cli:<user>`` as the author, a bad
  file one line naming the key and exit 2.

On PostgreSQL and on SQLite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.db.tables import calling_policy_changes
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import TeamNotFound
from contact_sync.scheduling.policies import (
    get_policy,
    load_policy,
    policy_changes,
    save_policy,
)
from contact_sync.scheduling.policy import DEFAULT_POLICY, parse_policy, policy_json
from tests.factories import make_key, make_team
from tests.test_api import Api, _api, _client, assert_error, assert_validation_error
from tests.test_policy_model import DEFAULTS
from tests.workers import cli_process, run_cli

POLICY = "/api/crm/calling-policy"
HISTORY = f"{POLICY}/history"
T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def put(api: Api, body: Any, *, key: str | None = None, **params: str) -> httpx.Response:
    return api.client.put(
        POLICY, content=json.dumps(body), headers=api.json_headers(key), params=params
    )


def changes_count(conn: Connection, team_id: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(calling_policy_changes)
            .where(calling_policy_changes.c.team_id == team_id)
        ).scalar_one()
    )


# --------------------------------------------------------------------------- the store
def test_the_first_change_records_the_defaults_as_old(conn: Connection) -> None:
    team = make_team(conn)
    assert get_policy(conn, team.id).updated_at is None
    policy = parse_policy({"max_attempts_per_day": 2})
    stored = save_policy(conn, team.id, policy, "key-1", now=T0)
    assert (stored.policy, stored.updated_at, stored.updated_by) == (policy, T0, "key-1")
    assert load_policy(conn, team.id) == policy
    assert get_policy(conn, team.id).updated_by == "key-1"
    [change] = policy_changes(conn, team.id, limit=10, offset=0).data
    assert change.old == DEFAULTS
    assert change.new == {**DEFAULTS, "max_attempts_per_day": 2}
    assert (change.changed_at, change.changed_by) == (T0, "key-1")


def test_saving_what_is_stored_writes_nothing(conn: Connection) -> None:
    team = make_team(conn)
    assert save_policy(conn, team.id, DEFAULT_POLICY, "key-1").updated_at is None
    assert changes_count(conn, team.id) == 0
    assert get_policy(conn, team.id).updated_at is None
    policy = parse_policy({"days": ["mon", "tue"]})
    save_policy(conn, team.id, policy, "key-1", now=T0)
    same = save_policy(
        conn, team.id, parse_policy({"days": ["tue", "mon", "mon"]}), "key-2", now=T0 + timedelta(1)
    )
    assert (same.updated_at, same.updated_by) == (T0, "key-1")
    assert changes_count(conn, team.id) == 1


def test_history_is_newest_first_each_old_the_previous_new(conn: Connection) -> None:
    team = make_team(conn)
    caps = [1, 2, 3, 4]
    for n, cap in enumerate(caps):
        policy = parse_policy({"max_attempts_total": cap})
        save_policy(conn, team.id, policy, f"key-{n}", now=T0 + timedelta(minutes=n))
    page = policy_changes(conn, team.id, limit=2, offset=1)
    assert page.total == 4
    assert [c.new["max_attempts_total"] for c in page.data] == [3, 2]
    assert [c.old["max_attempts_total"] for c in page.data] == [2, 1]
    assert [c.changed_by for c in page.data] == ["key-2", "key-1"]
    assert policy_changes(conn, team.id, limit=10, offset=4).data == []


def test_concurrent_writers_leave_a_history_whose_olds_chain(engine: Engine, team: Team) -> None:
    """Each entry's ``old`` is the entry before's ``new``: writers of a team wait their turn."""

    def write(cap: int) -> None:
        with unit_of_work(engine) as uow:
            save_policy(uow.conn, team.id, parse_policy({"max_attempts_total": cap}), f"k{cap}")
            uow.commit()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(1, 13)))
    with engine.connect() as conn:
        entries = policy_changes(conn, team.id, limit=100, offset=0).data[::-1]
        final = load_policy(conn, team.id)
    assert len(entries) == 12
    assert entries[0].old == DEFAULTS
    for before, after in pairwise(entries):
        assert after.old == before.new
    assert entries[-1].new == policy_json(final)


def test_a_team_that_does_not_exist_cannot_be_given_a_policy(conn: Connection) -> None:
    with pytest.raises(TeamNotFound):
        save_policy(conn, "no-such-team", DEFAULT_POLICY, "key-1")


# --------------------------------------------------------------------------- HTTP
def test_get_answers_the_defaults_until_changed(api: Api) -> None:
    response = api.get(POLICY)
    assert response.status_code == 200, response.text
    assert response.json() == {**DEFAULTS, "updated_at": None, "updated_by": None}


def test_put_replaces_partial_bodies_keeping_the_defaults(api: Api) -> None:
    response = put(api, {"maxAttemptsPerDay": 3, "retryAfter": {"busy": "2h"}})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = {
        **DEFAULTS,
        "max_attempts_per_day": 3,
        "retry_after": {**DEFAULTS["retry_after"], "busy": "2h"},
    }
    assert {k: v for k, v in body.items() if not k.startswith("updated_")} == expected
    assert body["updated_by"] == api.key_id
    assert datetime.fromisoformat(body["updated_at"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert api.get(POLICY).json() == body
    # A replacement, not a patch: what the next body leaves out is back to its default.
    again = put(api, {"window": {"end": "19:00"}}).json()
    assert again["max_attempts_per_day"] is None
    assert again["retry_after"] == DEFAULTS["retry_after"]
    assert again["window"] == {"start": "09:00", "end": "19:00"}


def test_a_get_answer_sent_back_is_accepted_unchanged(api: Api) -> None:
    first = put(api, {"holidays": ["2026-12-25"]}).json()
    assert put(api, first).json() == first
    assert api.get(HISTORY).json()["total"] == 1


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"retryAfter": {"busy": "soon"}}, "retry_after.busy"),
        ({"retry_after": {"no_answer": "400d"}}, "retry_after.no_answer"),
        ({"window": {"start": "18:00"}}, "window.start"),
        ({"window": {"start": "7am"}}, "window.start"),
        ({"holidays": ["2026-12-25", "2026-12-26", "2026-12-27", "2026-13-01"]}, "holidays.3"),
        ({"days": ["monday"]}, "days.0"),
        ({"defaultTimezone": "Nowhere/Land"}, "default_timezone"),
        ({"maxAttemptsTotal": 0}, "max_attempts_total"),
        ({"jurisdictionRules": "false"}, "jurisdiction_rules"),
        ({"retryAfter": {"ringing": "1h"}}, "retry_after.ringing"),
        ({"callWindow": {"start": "09:00"}}, "callWindow"),
        ({"holidays": ["2026-12-25"] * 1001}, "holidays"),
        ([], "body"),
    ],
)
def test_a_bad_body_is_422_naming_the_key_and_changes_nothing(
    api: Api, body: Any, key: str
) -> None:
    assert_validation_error(put(api, body), key)
    assert api.get(POLICY).json()["updated_at"] is None


def test_a_body_that_is_not_json_is_422(api: Api) -> None:
    response = api.client.put(POLICY, content=b"{", headers=api.json_headers())
    assert_validation_error(response, "body")


def test_a_huge_holiday_list_is_refused(api: Api) -> None:
    # 70,000 dates fit the 1 MiB body limit: refused for their number, at once.
    huge = ["2026-01-01"] * 70_000
    message = assert_validation_error(put(api, {"holidays": huge}), "holidays")
    assert "1000" in message


def test_a_read_key_may_read_but_not_replace(api: Api) -> None:
    reader = make_key(api.engine, api.team.id, scope="read").api_key
    assert api.get(POLICY, key=reader).status_code == 200
    assert api.get(HISTORY, key=reader).status_code == 200
    assert_error(put(api, {"maxAttemptsTotal": 5}, key=reader), 403, "This API key may only read")
    assert api.get(POLICY).json()["max_attempts_total"] is None


def test_no_key_or_a_wrong_one_is_401(api: Api) -> None:
    assert api.client.get(POLICY).status_code == 401
    assert api.get(POLICY, key="cs_nope").status_code == 401
    assert put(api, {}, key="cs_nope").status_code == 401


def test_another_team_never_sees_nor_changes_the_policy(api: Api) -> None:
    put(api, {"maxAttemptsPerDay": 2})
    theirs = api.get(POLICY, key=api.other_key).json()
    assert theirs == {**DEFAULTS, "updated_at": None, "updated_by": None}
    assert api.get(HISTORY, key=api.other_key).json()["total"] == 0
    assert put(api, {"maxAttemptsPerDay": 9}, key=api.other_key).status_code == 200
    assert api.get(POLICY).json()["max_attempts_per_day"] == 2
    assert api.get(HISTORY).json()["total"] == 1


def test_a_team_id_of_another_team_is_403_anywhere(api: Api) -> None:
    other = api.other_team.id
    assert_error(api.get(POLICY, params={"teamId": other}), 403)
    assert_error(api.get(HISTORY, params={"team_id": other}), 403)
    assert_error(put(api, {"maxAttemptsTotal": 5}, teamId=other), 403)
    assert_error(put(api, {"teamId": other, "maxAttemptsTotal": 5}), 403)
    assert_error(put(api, {"team_id": other, "maxAttemptsTotal": 5}), 403)
    assert api.get(POLICY, key=api.other_key).json()["updated_at"] is None
    own = put(api, {"teamId": api.team.id, "maxAttemptsTotal": 5}, teamId=api.team.id)
    assert own.json()["max_attempts_total"] == 5
    assert api.get(POLICY, params={"teamId": api.team.id}).status_code == 200


def test_history_over_http_newest_first_and_paged(api: Api) -> None:
    for cap in (1, 2, 3):
        assert put(api, {"maxAttemptsTotal": cap}).status_code == 200
    put(api, {"maxAttemptsTotal": 3})  # no change: no entry
    body = api.get(HISTORY, params={"limit": 2}).json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 2, 0)
    assert [e["new"]["max_attempts_total"] for e in body["data"]] == [3, 2]
    assert [e["old"]["max_attempts_total"] for e in body["data"]] == [2, 1]
    assert {e["changed_by"] for e in body["data"]} == {api.key_id}
    assert set(body["data"][0]) == {"changed_at", "changed_by", "old", "new"}
    last = api.get(HISTORY, params={"limit": 2, "offset": 2}).json()["data"]
    assert [e["old"] for e in last] == [DEFAULTS]


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"limit": "ten"}, "limit"),
        ({"order": "asc"}, "order"),
    ],
)
def test_bad_history_parameters_are_422_naming_them(
    api: Api, params: dict[str, str], key: str
) -> None:
    assert_validation_error(api.get(HISTORY, params=params), key)


def test_an_unknown_query_parameter_is_422(api: Api) -> None:
    assert_validation_error(api.get(POLICY, params={"team": "x"}), "team")
    assert_validation_error(put(api, {}, dryRun="true"), "dryRun")


# --------------------------------------------------------------------------- CLI
@pytest.fixture
def cli_env(database_url: str, engine: Engine) -> dict[str, str]:
    return {**os.environ, "CONTACT_SYNC_DATABASE_URL": database_url}


def test_cli_show_set_and_history(cli_env: dict[str, str], team: Team, tmp_path: Path) -> None:
    shown = json.loads(run_cli(cli_env, "policy", "show", "--team", team.id))
    assert shown == {**DEFAULTS, "updated_at": None, "updated_by": None}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"retryAfter": {"noAnswer": "2h"}, "days": ["mon", "fri"]}))
    stored = json.loads(run_cli(cli_env, "policy", "set", "--team", team.id, str(path)))
    assert stored["retry_after"]["no_answer"] == "2h"
    assert stored["days"] == ["mon", "fri"]
    assert stored["updated_by"].startswith("cli:")
    piped = run_cli(
        cli_env, "policy", "set", "--team", team.id, "-", stdin='{"maxAttemptsPerDay": 2}'
    )
    assert json.loads(piped)["retry_after"] == DEFAULTS["retry_after"]
    again = json.loads(run_cli(cli_env, "policy", "show", "--team", team.id))
    assert again["max_attempts_per_day"] == 2
    history = json.loads(run_cli(cli_env, "policy", "history", "--team", team.id))
    assert history["total"] == 2
    assert history["data"][0]["old"] == {**DEFAULTS, **stored_policy(stored)}
    assert history["data"][1]["old"] == DEFAULTS


def stored_policy(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if not k.startswith("updated_")}


def test_cli_a_bad_file_is_one_line_naming_the_key_and_exit_2(
    cli_env: dict[str, str], team: Team, tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"retry_after": {"busy": "soon"}, "holidays": ["x", "y"]}))
    done = cli_process(cli_env, "policy", "set", "--team", team.id, str(path))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "retry_after.busy" in line
    assert "holidays.0" in line
    assert done.stdout == ""
    for stdin, words in (
        ("{", "not valid JSON"),
        ('{"window": {"start": "25:00"}}', "window.start"),
    ):
        done = cli_process(cli_env, "policy", "set", "--team", team.id, "-", stdin=stdin)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr
    missing = cli_process(cli_env, "policy", "set", "--team", team.id, str(tmp_path / "none"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    with engine.connect() as conn:
        assert get_policy(conn, team.id).updated_at is None


def test_cli_policy_of_a_reaches_a_only(
    cli_env: dict[str, str], team: Team, other_team: Team
) -> None:
    run_cli(cli_env, "policy", "set", "--team", team.id, "-", stdin='{"maxAttemptsTotal": 4}')
    theirs = json.loads(run_cli(cli_env, "policy", "show", "--team", other_team.id))
    assert theirs == {**DEFAULTS, "updated_at": None, "updated_by": None}
    their_history = json.loads(run_cli(cli_env, "policy", "history", "--team", other_team.id))
    assert (their_history["total"], their_history["data"]) == (0, [])
    run_cli(cli_env, "policy", "set", "--team", other_team.id, "-", stdin='{"days": ["mon"]}')
    ours = json.loads(run_cli(cli_env, "policy", "show", "--team", team.id))
    assert (ours["max_attempts_total"], ours["days"]) == (4, DEFAULTS["days"])
    assert json.loads(run_cli(cli_env, "policy", "history", "--team", team.id))["total"] == 1


def test_cli_an_unknown_team_is_not_found(cli_env: dict[str, str]) -> None:
    for args in (("show",), ("history",)):
        done = cli_process(cli_env, "policy", *args, "--team", "no-such-team")
        assert done.returncode == 3, done.stderr
    done = cli_process(cli_env, "policy", "set", "--team", "no-such-team", "-", stdin="{}")
    assert done.returncode == 3, done.stderr


def test_a_policy_set_from_the_cli_is_the_one_the_api_answers(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "CONTACT_SYNC_DATABASE_URL": database_url}
    run_cli(env, "policy", "set", "--team", api.team.id, "-", stdin='{"holidays": ["2026-07-04"]}')
    answer = api.get(POLICY).json()
    assert answer["holidays"] == ["2026-07-04"]
    assert answer["updated_by"].startswith("cli:")
    assert policy_json(parse_policy(stored_policy(answer))) == stored_policy(answer)
