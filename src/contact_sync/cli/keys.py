"""Subcommands of teams and their keys: ``teams list`` and ``keys create|list|revoke``.

A key's token is printed once, by ``keys create`` (or ``teams create``), and
stored only as a hash: ``keys list`` shows what a key is (id, name, scope,
dates), never the key. Rotating a key is ``keys create`` then ``keys revoke``
of the old one.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from contact_sync.accounts.teams import (
    SCOPES,
    issue_api_key,
    list_api_keys,
    revoke_api_key,
    team_summaries,
)
from contact_sync.db.engine import make_engine
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.settings import get_settings


def _engine(args: argparse.Namespace) -> Engine:
    return make_engine(getattr(args, "database_url", None) or get_settings().database_url)


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns under their names."""
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(columns)]
    print("  ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_teams_list(args: argparse.Namespace) -> None:
    """Every team, oldest first, with its number of usable (unrevoked) keys."""
    with unit_of_work(_engine(args)) as uow:
        found = team_summaries(uow.conn)
    if args.json:
        print(json.dumps([team.to_dict() for team in found]))
        return
    if not found:
        print("no teams (contact-sync teams create --name NAME)")
        return
    print_table(
        ("id", "name", "region", "created", "keys"),
        [[t.id, t.name, t.region, _when(t.created_at), str(t.key_count)] for t in found],
    )


def cmd_keys_create(args: argparse.Namespace) -> None:
    """Issue a key for a team; its token is printed this once."""
    with unit_of_work(_engine(args)) as uow:
        key = issue_api_key(uow.conn, team_id=args.team, scope=args.scope, name=args.name)
        uow.commit()
    print(
        json.dumps(
            {"key_id": key.key_id, "api_key": key.api_key, "scope": key.scope, "name": key.name}
        )
    )


def cmd_keys_list(args: argparse.Namespace) -> None:
    """A team's keys, revoked ones included: never the key nor its hash."""
    with unit_of_work(_engine(args)) as uow:
        keys = list_api_keys(uow.conn, team_id=args.team)
    if args.json:
        print(json.dumps([key.to_dict() for key in keys]))
        return
    if not keys:
        print("no keys (contact-sync keys create --team ID)")
        return
    print_table(
        ("id", "name", "scope", "created", "last used", "revoked"),
        [
            [
                k.id,
                k.name or "-",
                k.scope,
                _when(k.created_at),
                _when(k.last_used_at),
                _when(k.revoked_at),
            ]
            for k in keys
        ],
    )


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    """Revoke a key: the API answers 401 to it from the next request on."""
    with unit_of_work(_engine(args)) as uow:
        key = revoke_api_key(uow.conn, key_id=args.key_id)
        uow.commit()
    print(f"key {key.id} of team {key.team_id} is revoked (since {_when(key.revoked_at)})")


def add_team_commands(teams_sub: Any) -> None:
    """Register ``teams list`` beside ``teams create``."""
    listing = teams_sub.add_parser("list", help="list teams with their number of usable keys")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=cmd_teams_list)


def add_key_commands(sub: Any) -> None:
    """Register ``keys create|list|revoke`` on the main parser."""
    keys = sub.add_parser("keys", help="issue, list and revoke a team's API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="issue a key; prints it once, as JSON")
    create.add_argument("--team", required=True, help="team id")
    create.add_argument(
        "--scope",
        choices=SCOPES,
        default="write",
        help="read: the API refuses every write (for the campaign scheduler); default write",
    )
    create.add_argument("--name", help="what the key is for, e.g. scheduler")
    create.set_defaults(func=cmd_keys_create)
    listing = keys_sub.add_parser("list", help="a team's keys (never the key itself)")
    listing.add_argument("--team", required=True, help="team id")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key: 401 from its next request on")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(func=cmd_keys_revoke)
