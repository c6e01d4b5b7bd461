"""``contact-sync fields list|define|delete --team ID``: a team's custom-field definitions.

The same service and validation as ``/api/crm/custom-fields`` (docs/design.md §13);
each command is one unit of work.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import Engine

from contact_sync.cli.keys import print_table
from contact_sync.db.engine import make_engine
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ContactSyncError, ValidationFailed
from contact_sync.fields import store
from contact_sync.fields.definitions import FIELD_TYPES
from contact_sync.settings import get_settings


class FieldConflict(ContactSyncError):
    """A key defined already (exit 6, as the API's 409)."""

    code = 6


def _engine(args: argparse.Namespace) -> Engine:
    return make_engine(getattr(args, "database_url", None) or get_settings().database_url)


def _option(text: str) -> dict[str, Any]:
    """``VALUE[:LABEL[:ALIAS,ALIAS...]]`` as an option."""
    value, _, rest = text.partition(":")
    label, _, aliases = rest.partition(":")
    option: dict[str, Any] = {"value": value}
    if label:
        option["label"] = label
    if aliases:
        option["aliases"] = [a for a in aliases.split(",") if a.strip()]
    return option


def _number(text: str | None, name: str) -> int | float | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValidationFailed({name: "Must be a number"}) from None


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"key": args.key, "label": args.label or args.key, "type": args.type}
    if args.description is not None:
        body["description"] = args.description
    if args.option:
        body["options"] = [_option(text) for text in args.option]
    for name in ("min", "max"):
        value = _number(getattr(args, name), name)
        if value is not None:
            body[name] = value
    if args.pattern is not None:
        body["pattern"] = args.pattern
    body["ai_extractable"] = not args.no_ai
    return body


def cmd_fields_define(args: argparse.Namespace) -> None:
    """Define a field; prints it as JSON."""
    body = _body(args)
    try:
        with unit_of_work(_engine(args)) as uow:
            stored = store.define(uow.conn, team_id=args.team, data=body)
            uow.commit()
    except store.AlreadyDefined as exc:
        raise FieldConflict(str(exc)) from None
    print(json.dumps(stored.to_dict()))


def cmd_fields_list(args: argparse.Namespace) -> None:
    """The team's definitions, oldest first."""
    with unit_of_work(_engine(args)) as uow:
        found = store.list_definitions(uow.conn, team_id=args.team)
    if args.json:
        print(json.dumps([item.to_dict() for item in found]))
        return
    if not found:
        print("no custom fields (contact-sync fields define --team ID --key KEY --type TYPE)")
        return
    rows = []
    for item in found:
        d = item.definition
        options = ",".join(o.value for o in d.options)
        rows.append([d.key, d.type, d.label, options or "-", "yes" if d.ai_extractable else "no"])
    print_table(("key", "type", "label", "options", "ai"), rows)


def cmd_fields_delete(args: argparse.Namespace) -> None:
    """Delete a definition (the values stay, untyped)."""
    with unit_of_work(_engine(args)) as uow:
        store.remove(uow.conn, team_id=args.team, key=args.key)
        uow.commit()
    print(f"custom field {args.key} of team {args.team} is no longer defined (values kept)")


def add_field_commands(sub: Any) -> None:
    """Register ``fields list|define|delete`` on the main parser."""
    fields = sub.add_parser("fields", help="a team's custom-field definitions")
    fields_sub = fields.add_subparsers(dest="fields_command", required=True, metavar="ACTION")
    listing = fields_sub.add_parser("list", help="the team's definitions")
    listing.add_argument("--team", required=True, help="team id")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=cmd_fields_list)
    define = fields_sub.add_parser("define", help="define a field; prints it as JSON")
    define.add_argument("--team", required=True, help="team id")
    define.add_argument("--key", required=True, help="the custom-field key (a slug)")
    define.add_argument("--type", required=True, choices=FIELD_TYPES)
    define.add_argument("--label", help="what people read (default: the key)")
    define.add_argument("--description")
    define.add_argument(
        "--option",
        action="append",
        metavar="VALUE[:LABEL[:ALIAS,...]]",
        help="an option of a select (repeatable), e.g. solar:Solar:pv,solar panels",
    )
    define.add_argument("--min", help="least value of a number")
    define.add_argument("--max", help="greatest value of a number")
    define.add_argument("--pattern", help="a regular expression a text value must match")
    define.add_argument("--no-ai", action="store_true", help="leave it out of the schema")
    define.set_defaults(func=cmd_fields_define)
    remove = fields_sub.add_parser("delete", help="delete a definition (values stay)")
    remove.add_argument("--team", required=True, help="team id")
    remove.add_argument("key", metavar="KEY")
    remove.set_defaults(func=cmd_fields_delete)
