"""Every ``contact-sync`` failure is one line that says what to do, never a traceback.

Issue 12 items 5 and 6. The commands are discovered from the parser, so that
a command added later is run with the same bad inputs: an unknown flag, bad
values, an unreachable database, a database never migrated, an unreachable
broker. Each runs as the real program in a subprocess, the way an operator
meets it, against real services (a private Redis, PostgreSQL, SQLite files).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

import contact_sync.db.migrations.versions as versions
from contact_sync.cli.main import build_parser, main
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from tests.factories import QUEUE, call_event
from tests.services import free_port

UNREACHABLE_DB = "postgresql+psycopg://u:secret@127.0.0.1:1/x"
UNREACHABLE_DB_SHOWN = "postgresql+psycopg://u:***@127.0.0.1:1/x"
UNREACHABLE_BROKER = "redis://:secret@127.0.0.1:1/0"
UNREACHABLE_BROKER_SHOWN = "redis://:***@127.0.0.1:1/0"
ACCEPTED = (
    "use postgresql://USER:PASSWORD@HOST:PORT/DATABASE (postgres:// and postgresql+psycopg:// "
    "work too) or sqlite:///PATH"
)
# Commands that take no database: they cannot fail for want of one.
NO_DATABASE = {
    ("publish",): "sends events to the broker only",
    ("demo",): "runs on its own SQLite file and serverless broker, whatever is configured",
    ("worker-health",): "reads the worker's heartbeat file only",
}
# Commands that need the broker before they do anything.
BROKER_COMMANDS = [("publish",), ("worker",)]
GLOBAL_OPTIONS = {"--database-url": "database_url", "--broker-url": "broker_url"}


# --- the real program -----------------------------------------------------------------


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m contact_sync.cli.main ARGS`` with no ``CONTACT_SYNC_`` setting but ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    result = subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", *args],
        env={**environment, **(env or {})},
        cwd=cwd,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def run_many(
    commands: Sequence[Sequence[str]], cwd: Path, **kwargs: Any
) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands four at a time (each spends most of its time importing)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda args: run_cli(*args, cwd=cwd, **kwargs), commands))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failure: non-zero exit, no traceback, exactly one line on stderr; returns it."""
    assert result.returncode != 0, (result.args, result.stdout)
    assert "Traceback" not in result.stderr, (result.args, result.stderr)
    assert "Exception ignored" not in result.stderr, (result.args, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, (result.args, result.stderr)
    return lines[0]


# --- the commands, from the parser ----------------------------------------------------


def leaves() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable command path (``("teams", "create")``…) and its parser."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        children = [
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        ]
        if not children:
            found[path] = parser
        for action in children:
            for name, child in action.choices.items():
                walk(child, (*path, name))

    walk(build_parser(), ())
    return found


def _placeholder(action: argparse.Action) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    if callable(action.type):
        try:
            action.type("1")
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            return "x"
        return "1"
    return "x"


def required_args(parser: argparse.ArgumentParser) -> list[str]:
    """The smallest arguments that get past the parser: each required one with a value."""
    args: list[str] = []
    chosen = {
        id(group._group_actions[0])
        for group in parser._mutually_exclusive_groups
        if group.required and group._group_actions
    }
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        required = action.required or id(action) in chosen
        if not action.option_strings:
            if required or action.nargs in (None, argparse.ONE_OR_MORE):
                args.append(_placeholder(action))
        elif required:
            flag = action.option_strings[-1]
            args += [flag] if action.nargs == 0 else [flag, _placeholder(action)]
    return args


def typed_options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, list[str]]]:
    """(flag, bad values) for each option whose values are checked."""
    for action in parser._actions:
        if not action.option_strings or action.dest in GLOBAL_OPTIONS.values():
            continue
        if action.choices is None and action.type in (None, str):
            continue
        bad = ["bogus"]
        if _placeholder(action) == "1":  # numbers: counts, sizes, ports are never negative
            bad.append("-1")
        yield action.option_strings[-1], bad


def test_the_discovery_finds_every_command_of_round_one() -> None:
    found = set(leaves())
    assert found >= {
        ("migrate",),
        ("teams", "create"),
        ("contacts", "list"),
        ("demo",),
        ("api",),
        ("worker",),
        ("publish",),
        ("dead-letters", "list"),
        ("dead-letters", "replay"),
    }
    assert set(NO_DATABASE) | set(BROKER_COMMANDS) <= found
    assert required_args(leaves()[("contacts", "list")]) == ["--team", "x"]
    assert required_args(leaves()[("dead-letters", "replay")]) == ["x"]


# --- every command, bad inputs --------------------------------------------------------


def test_every_command_refuses_an_unknown_flag_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for path, parser in leaves().items():
        with pytest.raises(SystemExit) as exited:
            main([*path, *required_args(parser), "--no-such-flag"])
        assert exited.value.code == 2, path
        [line] = capsys.readouterr().err.splitlines()
        assert "--no-such-flag" in line, path


def _parser_exit(argv: list[str]) -> int | str | None:
    """The parser's exit code for ``argv``, or None when it accepts them."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exited:
        return exited.code
    return None


def test_every_checked_option_refuses_a_bad_value_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused by the parser when it can tell; else by the command, still in one line."""
    passed_the_parser: list[list[str]] = []
    for path, parser in leaves().items():
        for flag, values in typed_options(parser):
            for value in values:
                argv = [*path, *required_args(parser), flag, value]
                code = _parser_exit(argv)
                if code is None:
                    passed_the_parser.append(argv)
                    continue
                assert code == 2, argv
                [line] = capsys.readouterr().err.splitlines()
                assert flag in line, (argv, line)
    assert passed_the_parser  # --limit -1, --offset -1: the read module refuses them
    env = {
        "CONTACT_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}",
        "CONTACT_SYNC_BROKER_URL": UNREACHABLE_BROKER,
    }
    for result in run_many(passed_the_parser, tmp_path, env=env):
        one_line_error(result)


def test_every_command_with_an_unreachable_database_is_one_line_naming_it(
    tmp_path: Path,
) -> None:
    """The URL given after the subcommand, as an operator may type it; password hidden."""
    commands = [
        [*path, *required_args(parser), "--database-url", UNREACHABLE_DB]
        for path, parser in leaves().items()
        if path not in NO_DATABASE
    ]
    for result in run_many(commands, tmp_path):
        line = one_line_error(result)
        assert result.returncode == 4, (result.args, line)
        assert f"cannot use database {UNREACHABLE_DB_SHOWN}: " in line, line
        assert "secret" not in result.stdout + result.stderr


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database with nothing in it (never migrated), dropped afterwards."""
    admin = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    name = f"contact_sync_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_command_on_a_database_never_migrated_says_to_run_migrate(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Round 1 said ``relation "teams" does not exist`` (or ``no such table``)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")
    commands = [
        ["--database-url", url, *path, *required_args(parser)]
        for path, parser in leaves().items()
        if path not in NO_DATABASE and path != ("migrate",)
    ]
    expected = f"contact-sync: the database at {url} has no schema: run `contact-sync migrate`"
    for result in run_many(commands, tmp_path, env={"CONTACT_SYNC_BROKER_URL": "filesystem://"}):
        assert one_line_error(result) == expected, result.args
        assert result.returncode == 4


@pytest.fixture
def migrated_sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def _events_file(path: Path, count: int = 2) -> list[dict[str, Any]]:
    events = [call_event("team_x", contact_id="ct_x") for _ in range(count)]
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return events


@pytest.mark.parametrize("command", BROKER_COMMANDS, ids=" ".join)
def test_the_commands_that_need_the_broker_say_in_one_line_that_it_is_unreachable(
    tmp_path: Path, migrated_sqlite_url: str, command: tuple[str, ...]
) -> None:
    """The URL given before the subcommand (round 1 took ``--broker-url`` only after)."""
    _events_file(tmp_path / "events.jsonl")
    args = ["events.jsonl"] if command == ("publish",) else []
    result = run_cli(
        "--broker-url",
        UNREACHABLE_BROKER,
        *command,
        *args,
        cwd=tmp_path,
        env={"CONTACT_SYNC_DATABASE_URL": migrated_sqlite_url},
    )
    line = one_line_error(result)
    assert result.returncode == 5
    assert line.startswith(f"contact-sync: cannot reach broker {UNREACHABLE_BROKER_SHOWN}: ")
    assert "secret" not in result.stdout + result.stderr


def test_database_and_broker_urls_are_accepted_before_and_after_every_command() -> None:
    for path, parser in leaves().items():
        rest = [*path, *required_args(parser)]
        for flag, dest in GLOBAL_OPTIONS.items():
            before = build_parser().parse_args([flag, "scheme://before", *rest])
            after = build_parser().parse_args([*rest, flag, "scheme://after"])
            neither = build_parser().parse_args(rest)
            assert getattr(before, dest) == "scheme://before", (path, flag)
            assert getattr(after, dest) == "scheme://after", (path, flag)
            assert getattr(neither, dest) is None, (path, flag)


# --- publish --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing.jsonl", "No such file or directory"), (".", "Is a directory")],
)
def test_publish_of_a_file_it_cannot_read_is_one_line_before_any_broker_is_tried(
    tmp_path: Path, name: str, reason: str
) -> None:
    result = run_cli(
        "publish", name, cwd=tmp_path, env={"CONTACT_SYNC_BROKER_URL": UNREACHABLE_BROKER}
    )
    assert one_line_error(result) == f"contact-sync: cannot read {name}: {reason}"
    assert result.returncode == 2


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    """A database of the run's private Redis of its own, empty."""
    url = re.sub(r"/\d+$", "/11", redis_url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def queued_events(broker_url: str) -> list[dict[str, Any]]:
    """The events in the messages waiting on the queue, oldest first."""
    import base64

    client = redis.Redis.from_url(broker_url)
    try:
        messages = [json.loads(raw) for raw in reversed(client.lrange(QUEUE, 0, -1))]
    finally:
        client.close()
    events: list[dict[str, Any]] = []
    for message in messages:
        [args, _kwargs, _embed] = json.loads(base64.b64decode(message["body"]))
        events += args[0] if isinstance(args[0], list) else [args[0]]
    return events


def test_publish_dash_reads_the_events_from_standard_input(tmp_path: Path, broker_url: str) -> None:
    events = _events_file(tmp_path / "events.jsonl", count=3)
    result = run_cli(
        "publish",
        "-",
        "--quiet",
        "--broker-url",
        broker_url,
        cwd=tmp_path,
        stdin=(tmp_path / "events.jsonl").read_bytes(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "published 3 events in 1 messages; 0 invalid lines skipped\n"
    assert queued_events(broker_url) == events


def test_publish_accepts_utf8_byte_order_marks_at_the_start_and_on_later_lines(
    tmp_path: Path, broker_url: str
) -> None:
    """A file saved by a Windows tool starts with one; ``cat`` of two such files has two."""
    bom = "\ufeff".encode()
    first, second = call_event("team_x", contact_id="ct_x"), call_event("team_x", phone="+1202")
    second["extraction"] = {"summary": "Zoë said «oui»"}  # non-ASCII survives as sent
    body = bom + json.dumps(first).encode() + b"\n" + bom + json.dumps(second).encode() + b"\n"
    (tmp_path / "bom.jsonl").write_bytes(body)
    result = run_cli("publish", "bom.jsonl", "--quiet", "--broker-url", broker_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "published 2 events in 1 messages; 0 invalid lines skipped\n"
    assert queued_events(broker_url) == [first, second]


def test_publish_reports_a_line_that_is_not_utf8_with_its_number_and_sends_the_others(
    tmp_path: Path, broker_url: str
) -> None:
    event = call_event("team_x", contact_id="ct_x")
    (tmp_path / "mixed.jsonl").write_bytes(b"\xff\xfe{}\n" + json.dumps(event).encode() + b"\n")
    result = run_cli("publish", "mixed.jsonl", "--quiet", "--broker-url", broker_url, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == ["line 1: not UTF-8 text (byte 1)"]
    assert queued_events(broker_url) == [event]


@pytest.mark.parametrize(("value", "says"), [("0", "at least 1"), ("501", "1..500"), ("x", "")])
def test_publish_refuses_a_batch_size_outside_1_to_500_in_one_line(
    tmp_path: Path, broker_url: str, value: str, says: str
) -> None:
    _events_file(tmp_path / "events.jsonl")
    result = run_cli(
        "publish", "events.jsonl", "--batch-size", value, "--broker-url", broker_url, cwd=tmp_path
    )
    line = one_line_error(result)
    assert result.returncode == 2
    assert "--batch-size" in line
    assert says in line
    assert queued_events(broker_url) == []


def _wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_publish_that_loses_the_broker_midway_says_how_far_it_got_in_one_line(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    publisher: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(lambda: _answers(client), "the private redis-server")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
        publisher = subprocess.Popen(
            [sys.executable, "-m", "contact_sync.cli.main", "publish", "-", "--quiet"],
            env={**environment, "CONTACT_SYNC_BROKER_URL": url},
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert publisher.stdin is not None
        publisher.stdin.write(json.dumps(call_event("team_x", contact_id="ct_x")).encode() + b"\n")
        publisher.stdin.flush()
        _wait_for(lambda: client.llen(QUEUE) == 1, "the first event on the queue")
        server.terminate()
        server.wait(timeout=30)
        _, err = publisher.communicate(
            json.dumps(call_event("team_x", contact_id="ct_x")).encode() + b"\n", timeout=120
        )
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        if server.poll() is None:
            server.kill()
        client.close()
    assert publisher.returncode == 5
    assert "Traceback" not in err.decode()
    last = err.decode().splitlines()[-1]
    assert last.startswith(f"contact-sync: lost broker {url} after 1 events were sent: ")
    assert last.endswith("publishing the file again is safe (duplicates are ignored)")


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# --- worker and api -------------------------------------------------------------------


def test_a_worker_whose_metrics_port_is_taken_says_which_port_in_one_line(
    tmp_path: Path, migrated_sqlite_url: str, broker_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # the metrics server listens on every address
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(
            "worker",
            "--metrics-port",
            str(port),
            cwd=tmp_path,
            env={"CONTACT_SYNC_DATABASE_URL": migrated_sqlite_url},
            timeout=60,
        )
    line = one_line_error(result)
    assert line == f"contact-sync: cannot serve metrics on port {port}: Address already in use"


def test_an_api_whose_port_is_taken_says_which_in_one_line(
    tmp_path: Path, migrated_sqlite_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(
            "api",
            "--port",
            str(port),
            "--database-url",
            migrated_sqlite_url,
            cwd=tmp_path,
            timeout=60,
        )
    line = one_line_error(result)
    assert line == f"contact-sync: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_an_api_on_a_host_name_that_does_not_resolve_says_so_in_one_line(
    tmp_path: Path, migrated_sqlite_url: str
) -> None:
    host = "no-such-host.invalid"  # RFC 2606: never resolves
    result = run_cli(
        "api", "--host", host, "--database-url", migrated_sqlite_url, cwd=tmp_path, timeout=60
    )
    assert one_line_error(result).startswith(f"contact-sync: cannot listen on {host}:8000: ")


@pytest.mark.parametrize("command", ["dead-letters list", "contacts list --team t"])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_status_141(
    tmp_path: Path, migrated_sqlite_url: str, command: str
) -> None:
    """``contact-sync dead-letters list | head -3``: like ``cat``, killed by SIGPIPE in a shell."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before the first line is written
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "contact_sync.cli.main", *command.split()],
            env={**environment, "CONTACT_SYNC_DATABASE_URL": migrated_sqlite_url},
            cwd=tmp_path,
            stdout=writer,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(writer)
    assert result.stderr == b""
    assert result.returncode == 141


# --- the database: URLs, schema, revisions ----------------------------------------------


def head_label() -> str:
    """The newest migration's file name, read from the package's versions folder."""
    folder = Path(versions.__file__).parent
    return max(path.stem for path in folder.glob("[0-9]*.py"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrate_says_from_which_revision_to_which(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")
    first = run_cli("migrate", "--database-url", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"migrated from (empty) to {head_label()}\n"
    again = run_cli("migrate", "--database-url", url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"already at {head_label()}\n"


def test_migrate_from_an_older_revision_names_both(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, "0002")
    engine.dispose()
    result = run_cli("--database-url", url, "migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"migrated from 0002_read_indexes to {head_label()}\n"


@pytest.mark.parametrize("command", [("api",), ("worker",)], ids=" ".join)
def test_an_api_or_worker_on_an_older_schema_refuses_to_start_and_says_to_migrate(
    tmp_path: Path, broker_url: str, command: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, "0002")
    engine.dispose()
    result = run_cli(
        *command, "--database-url", url, "--broker-url", broker_url, cwd=tmp_path, timeout=60
    )
    assert one_line_error(result) == (
        f"contact-sync: the database at {url} is at schema 0002_read_indexes, this version "
        f"needs {head_label()}: run `contact-sync migrate`"
    )


def test_migrate_on_a_database_of_a_newer_release_says_so_in_one_line(
    tmp_path: Path, migrated_sqlite_url: str
) -> None:
    engine = make_engine(migrated_sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = run_cli("migrate", "--database-url", migrated_sqlite_url, cwd=tmp_path)
    line = one_line_error(result)
    assert result.returncode == 4
    assert line.startswith(
        f"contact-sync: the database at {migrated_sqlite_url} is at schema revision 9999, "
        "which this version of contact-sync does not know"
    )


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgres_urls_are_accepted_in_each_spelling(
    tmp_path: Path, pg_engine: Any, postgres_url: str, scheme: str
) -> None:
    """``postgres://`` is what Heroku and many platforms hand out; psycopg 3 serves all."""
    url = make_url(postgres_url).set(drivername=scheme).render_as_string(hide_password=False)
    assert url.startswith(f"{scheme}://")
    result = run_cli(
        "contacts", "list", "--team", "t", "--json", "--database-url", url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:secret@db/crm",
        "postgresql+psycopg2://u:secret@db/crm",
        "http://u:secret@db/crm",
        "not a url",
        "nosuchdb://u:secret@host/x",
    ],
)
def test_a_database_url_that_cannot_be_used_names_the_accepted_forms(
    tmp_path: Path, url: str
) -> None:
    result = run_cli("--database-url", url, "contacts", "list", "--team", "t", cwd=tmp_path)
    line = one_line_error(result)
    assert result.returncode == 4
    assert line.startswith("contact-sync: invalid database URL ")
    assert line.endswith(f": {ACCEPTED}")
    assert "secret" not in result.stdout + result.stderr


def test_a_database_that_accepts_connections_but_never_answers_is_one_line_in_seconds(
    tmp_path: Path,
) -> None:
    """A dead host or a firewall: libpq's default was to wait forever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshake; nobody ever answers
        url = f"postgresql+psycopg://u:secret@127.0.0.1:{silent.getsockname()[1]}/x"
        started = time.monotonic()
        try:
            result = run_cli("contacts", "list", "--team", "t", "--database-url", url, cwd=tmp_path,
                             timeout=60)  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail("the command still waited for the database after 60 s")
    line = one_line_error(result)
    assert time.monotonic() - started < 45
    assert line.startswith("contact-sync: cannot use database postgresql+psycopg://u:***@")


# --- settings and bugs ----------------------------------------------------------------


def test_an_invalid_setting_in_the_environment_is_one_line_naming_the_variable(
    tmp_path: Path,
) -> None:
    result = run_cli(
        "contacts", "list", "--team", "t", cwd=tmp_path, env={"CONTACT_SYNC_MIN_CONFIDENCE": "x"}
    )
    line = one_line_error(result)
    assert result.returncode == 2
    assert line.startswith("contact-sync: invalid setting CONTACT_SYNC_MIN_CONFIDENCE: ")


def test_a_bug_is_one_line_naming_a_file_that_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_: argparse.Namespace) -> None:
        raise RuntimeError("a bug\nwith a second line")

    parser = build_parser()
    monkeypatch.setattr("contact_sync.cli.main.build_parser", lambda: parser)
    parser.set_defaults(func=broken)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.choices["migrate"].set_defaults(func=broken)
    assert main(["migrate"]) == 70
    [line] = capsys.readouterr().err.splitlines()
    match = re.fullmatch(
        r"contact-sync: unexpected error RuntimeError: a bug "
        r"\(a bug: please report it with (\S+)\)",
        line,
    )
    assert match, line
    saved = Path(match.group(1))
    try:
        assert "Traceback" in saved.read_text()
        assert "RuntimeError: a bug" in saved.read_text()
    finally:
        saved.unlink()
