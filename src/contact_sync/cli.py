"""The ``contact-sync`` command line: thin wrappers over the services.

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError

from contact_sync.cli_events import BrokerUnreachable, add_event_commands
from contact_sync.db.engine import make_engine, safe_url
from contact_sync.db.migrate import upgrade
from contact_sync.errors import ContactSyncError, NotFound, ValidationFailed
from contact_sync.logs import api_log_config
from contact_sync.query import ContactQuery, list_contacts
from contact_sync.settings import get_settings
from contact_sync.teams import create_team, issue_api_key


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (subcommand parsers inherit this)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class CliError(Exception):
    """A failure to report as one line with this exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _engine(args: argparse.Namespace) -> Engine:
    return make_engine(args.database_url or get_settings().database_url)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def cmd_migrate(args: argparse.Namespace) -> None:
    """Create or upgrade the schema."""
    upgrade(_engine(args))
    print("schema is up to date")


def cmd_teams_create(args: argparse.Namespace) -> None:
    """Create a team and its first API key; print both as JSON."""
    with _engine(args).begin() as conn:
        team = create_team(conn, name=args.name, region=args.region)
        key = issue_api_key(conn, team_id=team.id)
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
    with _engine(args).connect() as conn:
        page = list_contacts(conn, query)
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


def cmd_api(args: argparse.Namespace) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from contact_sync.api import create_app
    from contact_sync.settings import Settings

    settings = Settings()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    engine = _engine(args)
    with engine.connect():
        pass  # fail fast, with one line, when the database is unreachable
    # Bodies are parsed in worker threads; each time the event loop needs the GIL
    # back from one of them it waited up to the default 5 ms, several times per
    # request: /healthz p50 went from ~21 ms to ~11 ms under 1 MiB bodies with 1 ms.
    sys.setswitchinterval(0.001)
    uvicorn.run(
        create_app(settings, engine=engine),
        host=args.host,
        port=args.port,
        log_level="info",
        log_config=api_log_config(),
    )


def cmd_demo(args: argparse.Namespace) -> None:
    """The whole flow on the embedded default."""
    from contact_sync.demo import run_demo

    if args.database_url:
        os.environ["CONTACT_SYNC_DATABASE_URL"] = args.database_url
    code = run_demo(keep=args.keep)
    if code:
        raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = _Parser(prog="contact-sync", description="Contacts core of a voice-AI calling CRM.")
    parser.add_argument(
        "--database-url", help="overrides CONTACT_SYNC_DATABASE_URL (default: SQLite file here)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = sub.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    migrate.set_defaults(func=cmd_migrate)

    teams = sub.add_parser("teams", help="manage teams")
    teams_sub = teams.add_subparsers(dest="teams_command", required=True, metavar="ACTION")
    create = teams_sub.add_parser("create", help="create a team; prints team_id and api_key")
    create.add_argument("--name", required=True)
    create.add_argument("--region", default="US", help="ISO country code for national numbers")
    create.set_defaults(func=cmd_teams_create)

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
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    add_event_commands(sub)
    return parser


def _describe(exc: DBAPIError, url: str) -> str:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return f"cannot use database {safe_url(url)}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``contact-sync``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except ValidationFailed as exc:
        detail = "; ".join(f"{k.replace('_', '-')}: {v}" for k, v in exc.details.items())
        print(f"contact-sync: invalid input: {detail}", file=sys.stderr)
        return 2
    except NotFound as exc:
        print(f"contact-sync: not found: {exc}", file=sys.stderr)
        return 3
    except DBAPIError as exc:  # unreachable, refused, or no schema (not migrated)
        print(
            f"contact-sync: {_describe(exc, args.database_url or get_settings().database_url)}",
            file=sys.stderr,
        )
        return 4
    except ArgumentError:  # SQLAlchemy cannot read the URL (unknown scheme, bad syntax)
        url = safe_url(args.database_url or get_settings().database_url)
        print(f"contact-sync: invalid database URL {url}", file=sys.stderr)
        return 4
    except BrokerUnreachable as exc:
        print(f"contact-sync: {exc}", file=sys.stderr)
        return 5
    except (CliError, ContactSyncError) as exc:
        print(f"contact-sync: {exc}", file=sys.stderr)
        return getattr(exc, "code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
