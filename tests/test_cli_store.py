"""The ``contact-sync`` command line (docs/design.md §8) for the store: migrate, teams, contacts.

Each test runs the real program in a subprocess against a real database, the
way an operator would, and checks its exit code, stdout and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import Team, authenticate
from contact_sync.cli.main import build_parser, main
from contact_sync.contacts.companies import create_company
from contact_sync.contacts.query import ContactQuery, list_contacts
from contact_sync.db.engine import make_engine
from contact_sync.db.tables import teams
from tests.factories import make_contact

UNREACHABLE = "postgresql+psycopg://u:secret@127.0.0.1:1/x"
SCHEMA_TABLES = {
    "teams",
    "api_keys",
    "companies",
    "contacts",
    "contact_history",
    "processed_events",
    "dead_letters",
    "suppressions",
    "alembic_version",
}


def run_cli(
    *args: str, url: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m contact_sync.cli.main ARGS`` with only our database setting in the env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    if url is not None:
        env["CONTACT_SYNC_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failure: non-zero exit, exactly one line on stderr, no traceback; returns the line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database (no schema at all), dropped afterwards."""
    admin = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    name = f"contact_sync_cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a new PostgreSQL database or a new SQLite file."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


# --- migrate ---------------------------------------------------------------------------


def test_migrate_creates_the_schema_on_an_empty_database_and_is_safe_to_run_twice(
    fresh_url: str, tmp_path: Path
) -> None:
    first = run_cli("migrate", url=fresh_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("migrated from (empty) to ")
    head = first.stdout.split()[-1]
    engine = make_engine(fresh_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert tables >= SCHEMA_TABLES
        # Again, this time by flag: the flag overrides the (unusable) environment.
        second = run_cli("--database-url", fresh_url, "migrate", url=UNREACHABLE, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == f"already at {head}"
        assert set(inspect(engine).get_table_names()) == tables
    finally:
        engine.dispose()


# --- teams create ----------------------------------------------------------------------


def test_teams_create_prints_one_json_object_with_team_id_and_api_key(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    result = run_cli(
        "teams", "create", "--name", "Berlin Solar", "--region", "de", url=database_url
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    printed = json.loads(result.stdout)
    assert set(printed) == {"team_id", "api_key"}
    with engine.connect() as conn:
        row = conn.execute(select(teams).where(teams.c.id == printed["team_id"])).one()
        assert authenticate(conn, api_key=printed["api_key"]) is not None
    assert (row.name, row.default_region) == ("Berlin Solar", "DE")
    # The region is the team's: national numbers are read as German.
    assert make_contact(engine, row.id, phone="030 1234567").phone == "+49301234567"


def test_teams_create_defaults_to_region_us_and_rejects_unknown_regions(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", database_url, "teams", "create", "--name", "Acme"]) == 0
    team_id = json.loads(capsys.readouterr().out)["team_id"]
    assert (
        main(["--database-url", database_url, "teams", "create", "--name", "X", "--region", "ZZ"])
        == 2
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "contact-sync: invalid input: region: Region must be an ISO country code such as US"
    ]
    with engine.connect() as conn:
        rows = conn.execute(select(teams.c.id, teams.c.default_region)).all()
    assert [tuple(r) for r in rows] == [(team_id, "US")]


# --- contacts list ---------------------------------------------------------------------


@pytest.fixture
def listed(engine: Engine, team: Team, other_team: Team) -> dict[str, Any]:
    """Three contacts of ``team`` (and one of another team that must never show)."""
    with engine.begin() as conn:
        company = create_company(conn, team_id=team.id, name="Analytical Engines")
    ada = make_contact(
        engine, team.id, phone="(202) 555-1234", lead_status="qualified", company_id=company.id
    )
    grace = make_contact(engine, team.id, first_name="Grace", last_name="Hopper", do_not_call=True)
    alan = make_contact(
        engine, team.id, first_name="Alan", last_name="Turing", email="alan@example.org"
    )
    make_contact(engine, other_team.id, first_name="Eve", phone="(202) 555-9999")
    return {"team": team, "company": company, "ada": ada, "grace": grace, "alan": alan}


def cli_page(url: str, team_id: str, *flags: str) -> dict[str, Any]:
    result = run_cli("contacts", "list", "--team", team_id, "--json", *flags, url=url)
    assert result.returncode == 0, result.stderr
    page: dict[str, Any] = json.loads(result.stdout)
    return page


def test_contacts_list_json_prints_the_read_modules_page(
    database_url: str, engine: Engine, listed: dict[str, Any]
) -> None:
    team_id = listed["team"].id
    printed = cli_page(database_url, team_id)
    assert set(printed) == {"data", "total", "limit", "offset"}
    with engine.connect() as conn:
        expected = list_contacts(conn, ContactQuery(team_id=team_id)).to_dict()
    assert printed == json.loads(json.dumps(expected))
    assert (printed["total"], printed["limit"], printed["offset"]) == (3, 50, 0)
    assert [c["id"] for c in printed["data"]] == [
        listed["alan"].id,
        listed["grace"].id,
        listed["ada"].id,
    ]


def test_contacts_list_flags_are_the_read_modules_filters(
    database_url: str, listed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    team_id = listed["team"].id

    def listed_ids(*flags: str) -> list[str]:
        argv = ["--database-url", database_url, "contacts", "list", "--team", team_id, "--json"]
        assert main([*argv, *flags]) == 0
        return [c["id"] for c in json.loads(capsys.readouterr().out)["data"]]

    every_filter = (
        ("--company", listed["company"].id),
        ("--search", "202-555"),
        ("--lead-status", "Qualified"),
        ("--do-not-call", "false"),
        ("--has-phone", "true"),
    )
    assert listed_ids(*(part for pair in every_filter for part in pair)) == [listed["ada"].id]
    assert listed_ids("--do-not-call", "true", "--has-phone", "false") == [listed["grace"].id]
    assert listed_ids("--search", "ALAN@") == [listed["alan"].id]
    assert listed_ids("--lead-status", "new") == [listed["alan"].id, listed["grace"].id]
    assert listed_ids("--company", "no-such-company") == []


def test_contacts_list_prints_a_table_by_default(database_url: str, listed: dict[str, Any]) -> None:
    team_id = listed["team"].id
    result = run_cli(
        "contacts", "list", "--team", team_id, "--limit", "2", "--offset", "1", url=database_url
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "first_name",
        "last_name",
        "phone",
        "email",
        "lead_status",
        "do_not_call",
    ]
    assert len(lines) == 4  # header, two rows, footer
    assert lines[1].split() == [listed["grace"].id, "Grace", "Hopper", "new", "True"]
    assert lines[2].split() == [
        listed["ada"].id,
        "Ada",
        "Lovelace",
        "+12025551234",
        "qualified",
        "False",
    ]
    assert lines[-1] == "2-3 of 3"


def test_an_empty_list_prints_a_header_and_zero_of_zero(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", database_url, "contacts", "list", "--team", "nobody"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("id")
    assert lines[1:] == ["0-0 of 0"]


def test_an_invalid_limit_exits_non_zero_with_one_line_naming_limit(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'unused.sqlite3'}"
    result = run_cli("contacts", "list", "--team", "t", "--limit", "0", url=db, cwd=tmp_path)
    line = assert_one_line_error(result)
    assert line.startswith("contact-sync: invalid input: limit: ")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--limit", "501"], "limit"),
        (["--offset", "-1"], "offset"),
        (["--lead-status", "!!!"], "lead-status"),
        (["--search", "x" * 201], "search"),
    ],
)
def test_an_invalid_query_is_rejected_before_touching_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    db = f"sqlite:///{tmp_path / 'unused.sqlite3'}"
    assert main(["--database-url", db, "contacts", "list", "--team", "t", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"contact-sync: invalid input: {named}: ")
    assert not (tmp_path / "unused.sqlite3").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["contacts", "list"], "--team"),
        (["contacts", "list", "--team", "t", "--do-not-call", "maybe"], "--do-not-call"),
        (["contacts", "list", "--team", "t", "--limit", "ten"], "--limit"),
        (["teams", "create"], "--name"),
        (["no-such-command"], "no-such-command"),
        ([], "COMMAND"),
    ],
)
def test_every_usage_error_is_one_line_naming_the_argument(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert named in line


# --- databases that cannot be used --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["migrate"], ["teams", "create", "--name", "X"]],
)
def test_an_unreachable_database_is_one_line_naming_the_url_without_its_password(
    tmp_path: Path, args: list[str]
) -> None:
    result = run_cli(*args, url=UNREACHABLE, cwd=tmp_path)
    line = assert_one_line_error(result)
    assert "postgresql+psycopg://u:***@127.0.0.1:1/x" in line
    assert "secret" not in result.stderr + result.stdout


def test_an_unreachable_database_given_by_flag_hides_the_password_too(tmp_path: Path) -> None:
    result = run_cli("--database-url", UNREACHABLE, "contacts", "list", "--team", "t", cwd=tmp_path)
    line = assert_one_line_error(result)
    assert "u:***@127.0.0.1:1/x" in line
    assert "secret" not in result.stderr + result.stdout


@pytest.fixture(params=["postgresql", "sqlite"])
def schemaless_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database where the tables are not to be found (never migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    # A search path naming no schema hides every table, as on an unmigrated database.
    postgres_url: str = request.getfixturevalue("postgres_url")
    return f"{postgres_url}?options=-csearch_path%3Dno_such_schema"


def test_a_database_without_the_schema_is_one_line_naming_what_failed(
    schemaless_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # PostgreSQL reports a missing table as a ProgrammingError, SQLite as an
    # OperationalError: both must be one line saying what to do, not an uncaught exception.
    assert main(["--database-url", schemaless_url, "contacts", "list", "--team", "t"]) == 4
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("contact-sync: the database at ")
    assert line.endswith(" has no schema: run `contact-sync migrate`")


def test_an_unparsable_database_url_is_one_line_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--database-url", "nosuchdb://u:secret@host/x", "migrate"]) == 4
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("contact-sync: invalid database URL nosuchdb://u:***@host/x: use ")


# --- help ------------------------------------------------------------------------------


def _subcommands() -> list[list[str]]:
    """Every command path of the parser: ``[]``, ``["teams"]``, ``["teams", "create"]``…"""
    found: list[list[str]] = []

    def walk(parser: Any, path: list[str]) -> None:
        found.append(path)
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, child in action.choices.items():
                    walk(child, [*path, name])

    walk(build_parser(), [])
    return found


STORE_COMMANDS = [
    [],
    ["migrate"],
    ["teams"],
    ["teams", "create"],
    ["contacts"],
    ["contacts", "list"],
]
RUN_FOR_REAL = [["migrate"], ["teams", "create"], ["contacts", "list"]]


def test_help_works_on_each_store_subcommand_of_the_real_program(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    running = [
        (
            path,
            subprocess.Popen(
                [sys.executable, "-m", "contact_sync.cli.main", *path, "--help"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for path in RUN_FOR_REAL
    ]
    for path, process in running:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (path, err)
        assert out.startswith(" ".join(["usage: contact-sync", *path])), (path, out)
        assert err == ""
    assert not list(tmp_path.iterdir())  # help touches no database


def test_help_works_on_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _subcommands()
    assert all(path in paths for path in STORE_COMMANDS)
    for path in paths:
        with pytest.raises(SystemExit) as exited:
            main([*path, "--help"])
        assert exited.value.code == 0, path
        captured = capsys.readouterr()
        assert captured.out.startswith(" ".join(["usage: contact-sync", *path])), path
        assert captured.err == ""


def test_contacts_list_help_names_every_filter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["contacts", "list", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--team",
        "--company",
        "--search",
        "--lead-status",
        "--do-not-call",
        "--has-phone",
        "--limit",
        "--offset",
        "--json",
    ):
        assert flag in out


def test_the_installed_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "contact-sync"
    if not script.exists():
        pytest.skip("the contact-sync console script is not installed next to this Python")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "migrate" in result.stdout
    assert "contacts" in result.stdout
    usage = subprocess.run(
        [str(script), "contacts", "list"], capture_output=True, text=True, timeout=60, check=False
    )
    assert usage.returncode == 2
    assert "--team" in assert_one_line_error(usage)
