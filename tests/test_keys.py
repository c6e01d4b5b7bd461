"""API keys that can be managed (issue 12 item 3), on PostgreSQL and on SQLite.

- ``teams list``; ``keys create --team ID [--scope read|write] [--name N]`` prints the key
  once; ``keys list`` shows what each key is and never the key nor its hash; ``keys
  revoke`` makes the API answer 401 from the key's next request on.
- A ``read`` key (what the campaign scheduler should hold) is 403 on every write route,
  found from the app's routes so that a write route added later is covered, and 200 on
  every read.
- ``last_used_at`` is written at most once a minute per key, not once per request.
- Team names are unique regardless of case, Unicode form and runs of spaces: by the
  service, by a unique index, and by migration 0004, which renames existing duplicates.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import Engine, event, func, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from contact_sync.accounts.teams import Team, create_team, hash_key, issue_api_key, name_key
from contact_sync.api.auth import READ_ONLY
from contact_sync.calls.apply import apply_payloads
from contact_sync.cli.main import main
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import alembic_config, upgrade
from contact_sync.db.tables import api_keys, dead_letters, teams
from tests.factories import call_event, make_contact
from tests.test_api import CONTACTS, Api, _api, _client, assert_error
from tests.test_hostile_input import DATA_TABLES, snapshot
from tests.test_isolation import api_routes

LETTERS = "/api/crm/dead-letters"


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    """The real app; a write key of each team."""
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``contact-sync ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(database_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run(["--database-url", database_url, *args], capsys)


def _key_row(engine: Engine, key_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()


# --------------------------------------------------------------------------- teams list


def test_teams_list_shows_every_team_with_its_region_and_number_of_usable_keys(
    database_url: str, engine: Engine, team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:
        berlin = create_team(conn, name="Berlin Solar", region="DE")
        issue_api_key(conn, team_id=team.id)
        issue_api_key(conn, team_id=team.id, scope="read")
        issue_api_key(conn, team_id=berlin.id)
    code, out, _ = cli(database_url, capsys, "keys", "list", "--team", berlin.id, "--json")
    [berlin_key] = json.loads(out)
    assert cli(database_url, capsys, "keys", "revoke", berlin_key["id"])[0] == 0

    code, out, err = cli(database_url, capsys, "teams", "list", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [t["id"] for t in listed] == [team.id, berlin.id]  # oldest first
    assert set(listed[0]) == {"id", "name", "region", "created_at", "key_count"}
    assert (listed[0]["name"], listed[0]["region"], listed[0]["key_count"]) == (
        "Acme Solar",
        "US",
        2,
    )
    assert (listed[1]["region"], listed[1]["key_count"]) == ("DE", 0)  # revoked: not usable
    assert datetime.fromisoformat(listed[0]["created_at"]).tzinfo is not None

    code, table, _ = cli(database_url, capsys, "teams", "list")
    assert code == 0
    header, *rows = table.splitlines()
    assert header.split() == ["id", "name", "region", "created", "keys"]
    assert rows[0].split() == [
        team.id,
        "Acme",
        "Solar",
        "US",
        listed[0]["created_at"][:19] + "+00:00",
        "2",
    ]
    assert rows[1].split()[3:] == ["DE", listed[1]["created_at"][:19] + "+00:00", "0"]


def test_teams_list_of_no_teams_says_how_to_make_one(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(database_url, capsys, "teams", "list", "--json")[1] == "[]\n"
    code, out, _ = cli(database_url, capsys, "teams", "list")
    assert (code, out) == (0, "no teams (contact-sync teams create --name NAME)\n")


# --------------------------------------------------------------------------- keys create


def test_keys_create_prints_a_new_key_once_with_its_scope_and_name(
    database_url: str, engine: Engine, team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        database_url,
        capsys,
        "keys",
        "create",
        "--team",
        team.id,
        "--scope",
        "read",
        "--name",
        "scheduler",
    )
    assert code == 0, err
    printed = json.loads(out)
    assert set(printed) == {"key_id", "api_key", "scope", "name"}
    assert (printed["scope"], printed["name"]) == ("read", "scheduler")
    assert printed["api_key"].startswith("cs_")
    row = _key_row(engine, printed["key_id"])
    assert (row.team_id, row.scope, row.name, row.revoked_at) == (
        team.id,
        "read",
        "scheduler",
        None,
    )
    assert row.key_hash == hash_key(printed["api_key"])  # only the hash is kept

    code, out, _ = cli(database_url, capsys, "keys", "create", "--team", team.id)
    default = json.loads(out)
    assert (default["scope"], default["name"]) == ("write", None)
    assert default["api_key"] != printed["api_key"]


def test_the_keys_teams_create_makes_are_write_keys(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(database_url, capsys, "teams", "create", "--name", "Acme Solar")
    assert code == 0
    printed = json.loads(out)
    with engine.connect() as conn:
        [scope] = conn.execute(
            select(api_keys.c.scope).where(api_keys.c.team_id == printed["team_id"])
        ).scalars()
    assert scope == "write"


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["--team", "no-such-team"], 3, "no-such-team"),
        (["--team", "<team>", "--scope", "admin"], 2, "--scope"),
        (["--team", "<team>", "--name", " "], 2, "name"),
        (["--team", "<team>", "--name", "x" * 101], 2, "name"),
        (["--team", "<team>", "--name", "tab\there"], 2, "name"),
        ([], 2, "--team"),
    ],
    ids=["unknown-team", "unknown-scope", "blank-name", "long-name", "control-char", "no-team"],
)
def test_keys_create_refuses_bad_input_in_one_line_and_makes_no_key(
    database_url: str,
    engine: Engine,
    team: Team,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    named: str,
) -> None:
    argv = [team.id if arg == "<team>" else arg for arg in args]
    got, out, err = cli(database_url, capsys, "keys", "create", *argv)
    assert (got, out) == (code, "")
    [line] = err.splitlines()
    assert named in line
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(api_keys)).scalar() == 0


# --------------------------------------------------------------------------- keys list


def test_keys_list_shows_what_each_key_is_and_never_the_key_nor_its_hash(
    database_url: str, engine: Engine, team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:
        writer = issue_api_key(conn, team_id=team.id)
        reader = issue_api_key(conn, team_id=team.id, scope="read", name="scheduler")
        other = issue_api_key(conn, team_id=create_team(conn, name="Rival").id)
    used = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            update(api_keys).where(api_keys.c.id == reader.key_id).values(last_used_at=used)
        )
    assert cli(database_url, capsys, "keys", "revoke", writer.key_id)[0] == 0

    code, out, err = cli(database_url, capsys, "keys", "list", "--team", team.id, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [k["id"] for k in listed] == [writer.key_id, reader.key_id]  # oldest first
    fields = {"id", "team_id", "name", "scope", "created_at", "last_used_at", "revoked_at"}
    assert all(set(k) == fields for k in listed)
    assert (listed[0]["scope"], listed[0]["name"], listed[0]["last_used_at"]) == (
        "write",
        None,
        None,
    )
    assert listed[0]["revoked_at"] is not None
    assert (listed[1]["scope"], listed[1]["name"], listed[1]["revoked_at"]) == (
        "read",
        "scheduler",
        None,
    )
    assert datetime.fromisoformat(listed[1]["last_used_at"]) == used

    code, table, _ = cli(database_url, capsys, "keys", "list", "--team", team.id)
    assert code == 0
    header, *rows = table.splitlines()
    assert header.split() == ["id", "name", "scope", "created", "last", "used", "revoked"]
    assert [row.split()[0] for row in rows] == [writer.key_id, reader.key_id]
    assert "2026-11-20T15:00:00+00:00" in rows[1]
    for printed in (out, table):
        for secret in (writer.api_key, reader.api_key, hash_key(writer.api_key)):
            assert secret not in printed
        assert other.key_id not in printed  # another team's key


def test_keys_list_of_an_unknown_team_is_one_line_and_exit_3(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(database_url, capsys, "keys", "list", "--team", "no-such-team")
    assert (code, out) == (3, "")
    [line] = err.splitlines()
    assert "no-such-team" in line


# --------------------------------------------------------------------------- revoke


def test_a_revoked_key_is_401_from_its_next_request_on(
    api: Api, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with api.engine.begin() as conn:
        spare = issue_api_key(conn, team_id=api.team.id)
    assert api.get(CONTACTS).status_code == 200
    assert api.get(CONTACTS, key=spare.api_key).status_code == 200

    code, out, err = cli(database_url, capsys, "keys", "revoke", api.key_id)
    assert code == 0, err
    assert out.startswith(f"key {api.key_id} of team {api.team.id} is revoked")

    assert_error(api.get(CONTACTS), 401, "Invalid API key")
    assert_error(api.post(CONTACTS, {"firstName": "A", "lastName": "B"}), 401)
    # Rotation: the team's other key, and the other team's, still work.
    assert api.get(CONTACTS, key=spare.api_key).status_code == 200
    assert api.get(CONTACTS, key=api.other_key).status_code == 200


def test_revoking_a_key_twice_keeps_the_first_time_and_an_unknown_key_is_exit_3(
    database_url: str, engine: Engine, team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:
        key = issue_api_key(conn, team_id=team.id)
    assert cli(database_url, capsys, "keys", "revoke", key.key_id)[0] == 0
    first = _key_row(engine, key.key_id).revoked_at
    assert first is not None
    code, out, _ = cli(database_url, capsys, "keys", "revoke", key.key_id)
    assert code == 0
    assert _key_row(engine, key.key_id).revoked_at == first
    assert first.isoformat(timespec="seconds") in out

    code, out, err = cli(database_url, capsys, "keys", "revoke", "no-such-key")
    assert (code, out) == (3, "")
    [line] = err.splitlines()
    assert "no-such-key" in line


# --------------------------------------------------------------------------- read keys


@pytest.fixture
def reader(api: Api) -> str:
    """A read key of ``api``'s team."""
    with api.engine.begin() as conn:
        return issue_api_key(conn, team_id=api.team.id, scope="read", name="scheduler").api_key


def _a_letter(api: Api) -> str:
    """A dead letter of ``api``'s team (an event for a contact it does not have)."""
    event = call_event(api.team.id, contact_id=str(uuid.uuid4()))
    with api.engine.begin() as conn:
        [outcome] = apply_payloads(conn, [event])
    assert outcome.outcome == "dead_lettered"
    with api.engine.connect() as conn:
        letter_id: str = conn.execute(
            select(dead_letters.c.id).where(dead_letters.c.event_id == event["event_id"])
        ).scalar_one()
    return letter_id


def _url(path: str, contact_id: str, letter_id: str, company_id: str, key: str = "budget") -> str:
    return path.format(
        contact_id=contact_id, dead_letter_id=letter_id, company_id=company_id, key=key
    )


def test_a_read_key_is_403_on_every_write_route_and_nothing_changes(api: Api, reader: str) -> None:
    """Every route that is not a GET, found from the app: one added later is covered."""
    contact = api.create(phone="+12025550100")
    letter_id = _a_letter(api)
    company_id = api.company("Acme")["id"]
    bodies: dict[str, Any] = {"POST": {"firstName": "Eve", "lastName": "R", "name": "Co"}}
    bodies["PATCH"] = {"notes": "changed"}
    bodies["PUT"] = {"minConfidence": 0.9}
    writes = [(method, path) for method, path in api_routes() if method != "GET"]
    assert {method for method, _ in writes} == {"POST", "PATCH", "DELETE", "PUT"}
    assert (("POST", f"{LETTERS}/{{dead_letter_id}}/replay")) in writes
    assert (("POST", f"{LETTERS}/{{dead_letter_id}}/discard")) in writes
    before = snapshot(api.engine, (*DATA_TABLES, dead_letters))
    for method, path in writes:
        url = _url(path, contact["id"], letter_id, company_id)
        response = api.client.request(
            method, url, content=json.dumps(bodies.get(method)), headers=api.json_headers(reader)
        )
        assert_error(response, 403, READ_ONLY)
    assert snapshot(api.engine, (*DATA_TABLES, dead_letters)) == before
    # The same writes with the team's write key go through.
    assert api.patch(contact["id"], {"notes": "changed"}).status_code == 200


def test_a_read_key_reads_every_read_route(api: Api, reader: str) -> None:
    contact = api.create(phone="+12025550100", timezone="America/Chicago")
    letter_id = _a_letter(api)
    company_id = api.company("Acme")["id"]
    defined = api.post("/api/crm/custom-fields", {"key": "budget", "label": "B", "type": "number"})
    assert defined.status_code == 201, defined.text
    reads = [path for method, path in api_routes() if method == "GET"]
    assert len(reads) >= 7
    for path in reads:
        response = api.get(_url(path, contact["id"], letter_id, company_id), key=reader)
        assert response.status_code == 200, (path, response.text)
    listed = api.get(CONTACTS, key=reader).json()
    assert [c["id"] for c in listed["data"]] == [contact["id"]]


def test_a_read_key_is_403_before_its_write_body_is_read(api: Api, reader: str) -> None:
    """The scope is the key's: whatever the body holds (here not even JSON), 403."""
    response = api.client.post(CONTACTS, content=b"{not json", headers=api.json_headers(reader))
    assert_error(response, 403, READ_ONLY)


# --------------------------------------------------------------------------- last use


def _count_key_writes(engine: Engine) -> list[str]:
    """Every UPDATE of ``api_keys`` the engine sends from now on."""
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    return seen


def test_last_used_at_is_written_once_a_minute_at_most_not_per_request(api: Api) -> None:
    assert _key_row(api.engine, api.key_id).last_used_at is None
    writes = _count_key_writes(api.engine)
    started = datetime.now(UTC)
    for _ in range(20):
        assert api.get(CONTACTS).status_code == 200
    first = _key_row(api.engine, api.key_id).last_used_at
    assert first is not None
    assert started <= first <= datetime.now(UTC)
    assert len(writes) == 1
    # A minute later (moved back here rather than waited for), the next request writes it.
    with api.engine.begin() as conn:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == api.key_id)
            .values(last_used_at=first - timedelta(seconds=61))
        )
    writes.clear()
    for _ in range(5):
        assert api.get(CONTACTS).status_code == 200
    assert _key_row(api.engine, api.key_id).last_used_at >= started
    assert len(writes) == 1
    # Only the key that was used: the other team's key has not been.
    with api.engine.connect() as conn:
        unused = conn.execute(
            select(api_keys.c.last_used_at).where(api_keys.c.team_id == api.other_team.id)
        ).scalar_one()
    assert unused is None


def test_a_refused_request_still_counts_as_a_use_of_its_key(api: Api, reader: str) -> None:
    assert_error(api.post(CONTACTS, {"firstName": "A", "lastName": "B"}, key=reader), 403)
    with api.engine.connect() as conn:
        used = conn.execute(
            select(api_keys.c.last_used_at).where(api_keys.c.scope == "read")
        ).scalar_one()
    assert used is not None


# --------------------------------------------------------------------------- team names


@pytest.mark.parametrize(
    "taken",
    [
        "Acme Solar",
        "acme solar",
        "ACME SOLAR",
        "  Acme   Solar ",
        "Ａｃｍｅ Ｓｏｌａｒ",
        "acme\tsolar",
    ],
    ids=["same", "lower", "upper", "spaces", "full-width", "tab"],
)
def test_teams_create_refuses_a_name_another_team_has_in_any_case(
    database_url: str,
    engine: Engine,
    team: Team,
    capsys: pytest.CaptureFixture[str],
    taken: str,
) -> None:
    code, out, err = cli(database_url, capsys, "teams", "create", "--name", taken)
    assert code != 0
    assert out == ""
    [line] = err.splitlines()
    assert line == (
        f"contact-sync: invalid input: name: A team named 'Acme Solar' already exists "
        f"(team {team.id})"
    )
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(teams)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(api_keys)).scalar() == 0


def test_names_that_only_look_alike_are_different_teams(engine: Engine, team: Team) -> None:
    with engine.begin() as conn:
        for name in ("Acme Solar 2", "Acme-Solar", "Acme Sølar", "Straße", "Strasse Ltd"):
            create_team(conn, name=name)
        with pytest.raises(Exception, match="already exists"):
            create_team(conn, name="STRASSE")  # case folding: ß is ss


def test_the_database_itself_refuses_a_second_team_with_the_same_name(
    engine: Engine, team: Team
) -> None:
    """The unique index, for writers that skip the service's check (or race it)."""
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO teams (id, name, name_key, default_region, calls_overwrite_people, "
                "created_at) VALUES ('t2', 'ACME SOLAR', :key, 'US', false, :now)"
            ),
            {"key": name_key("ACME SOLAR"), "now": datetime.now(UTC)},
        )


# --------------------------------------------------------------------------- migration 0004


@pytest.fixture(params=["postgresql", "sqlite"])
def blank_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database (no schema), on each backend; removed afterwards."""
    if request.param == "sqlite":
        with tempfile.TemporaryDirectory(prefix="contact-sync-migration-") as folder:
            yield f"sqlite:///{os.path.join(folder, 'before.sqlite3')}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"contact_sync_migration_{uuid.uuid4().hex[:12]}"
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _insert_team(engine: Engine, team_id: str, name: str, minutes: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO teams (id, name, default_region, calls_overwrite_people, created_at) "
                "VALUES (:id, :name, 'US', false, :at)"
            ),
            {
                "id": team_id,
                "name": name,
                "at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
            },
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, team_id, key_hash, created_at) "
                "VALUES (:id, :team, :hash, :at)"
            ),
            {
                "id": f"key-{team_id}",
                "team": team_id,
                "hash": hash_key(team_id),
                "at": datetime(2026, 1, 1, tzinfo=UTC),
            },
        )


def test_migration_0004_renames_later_duplicate_team_names_and_keeps_every_key_a_writer(
    blank_url: str,
) -> None:
    engine = make_engine(blank_url)
    try:
        upgrade(engine, "0003")
        # Three teams named alike (the oldest keeps the name), one whose "(2)" is taken.
        _insert_team(engine, "t-old", "Acme Solar", 0)
        _insert_team(engine, "t-mid", "ACME SOLAR", 1)
        _insert_team(engine, "t-new", "acme  solar", 2)
        _insert_team(engine, "t-two", "Acme Solar (2)", -1)
        _insert_team(engine, "t-else", "Rival", 3)
        upgrade(engine)
        with engine.connect() as conn:
            names = {row.id: row.name for row in conn.execute(select(teams.c.id, teams.c.name))}
            keys = conn.execute(select(api_keys.c.team_id, api_keys.c.scope)).all()
        assert names == {
            "t-two": "Acme Solar (2)",
            "t-old": "Acme Solar",
            "t-mid": "ACME SOLAR (3)",
            "t-new": "acme  solar (4)",
            "t-else": "Rival",
        }
        assert sorted(keys) == sorted((team_id, "write") for team_id in names)
        with engine.begin() as conn, pytest.raises(Exception, match="already exists"):
            create_team(conn, name="acme solar (3)")
    finally:
        engine.dispose()


def test_migration_0004_goes_back_only_while_no_usable_read_key_exists(
    blank_url: str,
) -> None:
    engine = make_engine(blank_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            team = create_team(conn, name="Acme Solar")
            reader = issue_api_key(conn, team_id=team.id, scope="read")
        with pytest.raises(RuntimeError, match="read-only API keys would become able to write"):
            command.downgrade(alembic_config(engine), "0003")
        with engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == reader.key_id)
                .values(revoked_at=datetime.now(UTC))
            )
        command.downgrade(alembic_config(engine), "0003")
        columns = {column["name"] for column in inspect(engine).get_columns("api_keys")}
        assert {"scope", "name", "last_used_at"}.isdisjoint(columns)
        upgrade(engine)  # and up again
        make_contact(engine, team.id)
    finally:
        engine.dispose()
