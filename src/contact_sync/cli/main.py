"""The ``contact-sync`` command line: thin wrappers over the services.

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from contact_sync.accounts.teams import create_team, issue_api_key
from contact_sync.cli.events import BrokerUnreachable, add_event_commands, port_number
from contact_sync.cli.fields import add_field_commands
from contact_sync.cli.import_csv import add_import_command
from contact_sync.cli.keys import add_key_commands, add_team_commands
from contact_sync.cli.policy import add_policy_commands
from contact_sync.contacts.query import ContactQuery, list_contacts
from contact_sync.db.engine import InvalidDatabaseURL, is_outage, make_engine, safe_url
from contact_sync.db.migrate import UnknownRevision, schema_problem, upgrade
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ContactSyncError, NotFound, ValidationFailed
from contact_sync.logs import api_log_config
from contact_sync.settings import get_settings


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (subcommand parsers inherit this)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class CliError(Exception):
    """A failure to report as one line with this exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _database_url(args: argparse.Namespace) -> str:
    url: str = getattr(args, "database_url", None) or get_settings().database_url
    return url


def _engine(args: argparse.Namespace) -> Engine:
    return make_engine(_database_url(args))


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def cmd_migrate(args: argparse.Namespace) -> None:
    """Create or upgrade the schema; say from which revision to which."""
    engine = _engine(args)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    print(f"already at {after}" if before == after else f"migrated from {before} to {after}")


def cmd_teams_create(args: argparse.Namespace) -> None:
    """Create a team and its first API key; print both as JSON."""
    with unit_of_work(_engine(args)) as uow:
        team = create_team(uow.conn, name=args.name, region=args.region)
        key = issue_api_key(uow.conn, team_id=team.id)
        uow.commit()
    print(json.dumps({"team_id": team.id, "api_key": key.api_key}))


_COLUMNS = ("id", "first_name", "last_name", "phone", "email", "lead_status", "do_not_call")


def cmd_contacts_list(args: argparse.Namespace) -> None:
    """The read module from a terminal."""
    params: dict[str, Any] = {
        "team_id": args.team,
        "company_id": args.company,
        "search": args.search,
        "lead_status": args.lead_status,
        "do_not_call": args.do_not_call,
        "has_phone": args.has_phone,
        "tag": args.tag,
        "sort": args.sort,
        "limit": args.limit,
        "offset": args.offset,
    }
    query = ContactQuery.parse({k: v for k, v in params.items() if v is not None})
    with unit_of_work(_engine(args)) as uow:
        page = list_contacts(uow.conn, query)
    if args.json:
        print(json.dumps(page.to_dict()))
        return
    rows = [
        [str(getattr(c, col) if getattr(c, col) is not None else "") for col in _COLUMNS]
        for c in page.data
    ]
    widths = [max([len(col)] + [len(r[i]) for r in rows]) for i, col in enumerate(_COLUMNS)]
    print("  ".join(col.ljust(w) for col, w in zip(_COLUMNS, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    last = page.offset + len(page.data)
    print(f"{page.offset + 1 if page.data else 0}-{last} of {page.total}")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket for the API, bound before uvicorn starts.

    A port in use, or a host that is not this machine's, is then one line naming
    it; uvicorn logged several lines and exited.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        listener.bind((host, port))
        listener.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        listener.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listener


def cmd_api(args: argparse.Namespace) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from contact_sync.api import create_app
    from contact_sync.settings import Settings

    settings = Settings()
    overrides = {"database_url": args.database_url, "broker_url": args.broker_url}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v})
    engine = _engine(args)
    # Fail fast, with one line, when the database is unreachable or not migrated.
    problem = schema_problem(engine)
    if problem:
        raise CliError(f"the database at {safe_url(_database_url(args))} {problem}", 4)
    listener = _listen(args.host, args.port)
    logging.captureWarnings(True)  # as JSON lines too (api_log_config)
    # Bodies are parsed in worker threads; each time the event loop needs the GIL
    # back from one of them it waited up to the default 5 ms, several times per
    # request: /healthz p50 went from ~21 ms to ~11 ms under 1 MiB bodies with 1 ms.
    sys.setswitchinterval(0.001)
    config = uvicorn.Config(
        create_app(settings, engine=engine),
        host=args.host,
        port=args.port,
        log_level="info",
        log_config=api_log_config(),
        access_log=False,  # the API logs its own access lines, as JSON (api/observe.py)
    )
    server = uvicorn.Server(config)
    server.run(sockets=[listener])
    if not server.started:
        raise CliError("the API server did not start (see the log lines above)")


def cmd_demo(args: argparse.Namespace) -> None:
    """The whole flow on the demo's own files: ``--database-url`` and the environment are unused."""
    from contact_sync.cli.demo import run_demo

    code = run_demo(keep=args.keep)
    if code:
        raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = _Parser(prog="contact-sync", description="Contacts core of a voice-AI calling CRM.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = sub.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    migrate.set_defaults(func=cmd_migrate)

    teams = sub.add_parser("teams", help="manage teams")
    teams_sub = teams.add_subparsers(dest="teams_command", required=True, metavar="ACTION")
    create = teams_sub.add_parser("create", help="create a team; prints team_id and api_key")
    create.add_argument("--name", required=True)
    create.add_argument("--region", default="US", help="ISO country code for national numbers")
    create.set_defaults(func=cmd_teams_create)
    add_team_commands(teams_sub)
    add_key_commands(sub)
    add_field_commands(sub)

    contacts = sub.add_parser("contacts", help="read contacts")
    contacts_sub = contacts.add_subparsers(dest="contacts_command", required=True, metavar="ACTION")
    listing = contacts_sub.add_parser("list", help="list a team's contacts")
    listing.add_argument("--team", required=True, help="team id")
    listing.add_argument("--company")
    listing.add_argument("--search")
    listing.add_argument("--lead-status")
    listing.add_argument("--do-not-call", type=_bool, metavar="true|false")
    listing.add_argument("--has-phone", type=_bool, metavar="true|false")
    listing.add_argument("--tag", action="append", help="only contacts with this tag (repeatable)")
    listing.add_argument("--sort", help="created_at, updated_at or last_name; - for descending")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--offset", type=int)
    listing.add_argument("--json", action="store_true", help="print {data, total, limit, offset}")
    listing.set_defaults(func=cmd_contacts_list)

    demo = sub.add_parser("demo", help="show the whole flow on a fresh machine (no servers)")
    demo.add_argument("--keep", action="store_true", help="keep the demo data afterwards")
    demo.set_defaults(func=cmd_demo)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=port_number, default=8000)
    api.set_defaults(func=cmd_api)

    add_event_commands(sub)
    add_policy_commands(sub)
    add_import_command(sub)
    _add_global_options(parser, top=True)
    return parser


_GLOBAL_OPTIONS = {
    "--database-url": "overrides CONTACT_SYNC_DATABASE_URL (default: SQLite file here)",
    "--broker-url": "overrides CONTACT_SYNC_BROKER_URL",
}


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--database-url`` and ``--broker-url`` on ``parser`` and every subcommand below it.

    So they are accepted before the subcommand and after it. A subcommand's copy
    defaults to SUPPRESS: argparse copies a subcommand's defaults over what was
    parsed before it, which would turn a URL given first back into None.
    """
    for flag, text in _GLOBAL_OPTIONS.items():
        existing = parser._option_string_actions.get(flag)
        if existing is None:
            default = None if top else argparse.SUPPRESS
            parser.add_argument(flag, metavar="URL", default=default, help=text)
        elif not top:
            existing.default = argparse.SUPPRESS
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_global_options(child, top=False)


def _describe(exc: DBAPIError | PoolTimeout, url: str) -> str:
    """One line for a database error; a reachable database without the schema says so."""
    if not is_outage(exc):
        problem: str | None = None
        engine = make_engine(url)
        try:
            problem = schema_problem(engine)
        except Exception:  # the first error is the one to report
            problem = None
        finally:
            engine.dispose()
        if problem:
            return f"the database at {safe_url(url)} {problem}"
    orig = getattr(exc, "orig", None) or exc
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"cannot use database {safe_url(url)}: {reason}"


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # no real file descriptor (captured in tests)
        return False


def _settings_error(exc: ValidationError) -> str:
    problems = []
    for item in exc.errors():
        name = "_".join(str(part) for part in item.get("loc", ())).upper()
        problems.append(f"CONTACT_SYNC_{name}: {item.get('msg', 'invalid')}")
    return "invalid setting " + "; ".join(problems)


def _unexpected(exc: BaseException) -> int:
    """A bug: one line, and the traceback kept in a file for the report."""
    handle, path = tempfile.mkstemp(prefix="contact-sync-error-", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        traceback.print_exception(exc, file=out)
    reason = (str(exc).strip().splitlines() or [""])[0]
    print(
        f"contact-sync: unexpected error {type(exc).__name__}: {reason} "
        f"(a bug: please report it with {path})",
        file=sys.stderr,
    )
    return 70  # EX_SOFTWARE


def _run(func: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run a subcommand; map each failure to one line on stderr and an exit code."""
    try:
        func(args)
        sys.stdout.flush()  # a reader that left shows here, not as a traceback at exit
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # The reader left (``| head``): stop quietly, as standard tools do when
        # SIGPIPE ends them, and with the status a shell gives them (128 + 13),
        # so that ``set -o pipefail`` scripts see what they see from ``cat``.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("contact-sync: interrupted", file=sys.stderr)
        return 130
    except ValidationFailed as exc:
        detail = "; ".join(f"{k.replace('_', '-')}: {v}" for k, v in exc.details.items())
        print(f"contact-sync: invalid input: {detail}", file=sys.stderr)
        return 2
    except NotFound as exc:
        print(f"contact-sync: not found: {exc}", file=sys.stderr)
        return 3
    except (DBAPIError, PoolTimeout) as exc:  # unreachable, refused, or no schema (not migrated)
        print(f"contact-sync: {_describe(exc, _database_url(args))}", file=sys.stderr)
        return 4
    except UnknownRevision as exc:
        print(
            f"contact-sync: the database at {safe_url(_database_url(args))} {exc}", file=sys.stderr
        )
        return 4
    except InvalidDatabaseURL as exc:
        print(f"contact-sync: {exc}", file=sys.stderr)
        return 4
    except ArgumentError:  # SQLAlchemy cannot use the URL's options
        print(f"contact-sync: {InvalidDatabaseURL(_database_url(args))}", file=sys.stderr)
        return 4
    except BrokerUnreachable as exc:
        print(f"contact-sync: {exc}", file=sys.stderr)
        return 5
    except (CliError, ContactSyncError) as exc:
        print(f"contact-sync: {exc}", file=sys.stderr)
        return getattr(exc, "code", 1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``contact-sync``; returns the exit code.

    Every failure is one line on stderr and a non-zero exit, never a traceback:
    usage errors exit 2 (argparse), bad input 2, not found 3, the database 4,
    the broker 5, a bug 70 (its traceback goes to a file the line names).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        return _run(func, args)
    except ValidationError as exc:
        if exc.title != "Settings":
            return _unexpected(exc)
        print(f"contact-sync: {_settings_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else is a bug: one line, not a traceback
        return _unexpected(exc)


if __name__ == "__main__":
    sys.exit(main())
