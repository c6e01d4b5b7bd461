"""``contact-sync policy show|set|history``: a team's calling policy (docs/design.md §12).

``set`` reads the whole policy from a JSON file (``-``: standard input), the
same document ``PUT /api/crm/calling-policy`` takes: keys left out keep their
defaults. A bad file is one line naming the key (``retry_after.busy: …``) and
exit 2; the change is recorded as made by ``cli:<login name>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from contact_sync.accounts.teams import get_team
from contact_sync.cli.events import _operator, positive_int
from contact_sync.cli.keys import _engine
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ContactSyncError, ValidationFailed
from contact_sync.scheduling.policies import get_policy, policy_changes, save_policy
from contact_sync.scheduling.policy import CallingPolicy, parse_policy
from contact_sync.storable import unstorable_text


class BadPolicyFile(ContactSyncError):
    """The policy file cannot be read or is no valid policy (exit 2)."""

    code = 2


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BadPolicyFile(f"cannot read {path}: {reason}") from None


def read_policy_file(path: str) -> CallingPolicy:
    """The policy in the JSON file ``path`` (``-``: stdin), or ``BadPolicyFile`` naming the
    key at fault."""
    name = "standard input" if path == "-" else path
    try:
        data: Any = json.loads(_read_text(path))
    except (ValueError, RecursionError) as exc:
        raise BadPolicyFile(f"{name} is not valid JSON: {exc}") from None
    if unstorable_text(data) is not None:
        raise BadPolicyFile(f"{name} holds text that is not valid Unicode or holds NUL")
    try:
        return parse_policy(data)
    except ValidationFailed as exc:
        problems = "; ".join(f"{key}: {message}" for key, message in exc.details.items())
        raise BadPolicyFile(f"invalid policy in {name}: {problems}") from None


def _offset(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def cmd_policy_show(args: argparse.Namespace) -> None:
    """Print the team's policy as JSON, with ``updated_at`` and ``updated_by``."""
    with unit_of_work(_engine(args)) as uow:
        get_team(uow.conn, team_id=args.team)
        stored = get_policy(uow.conn, args.team)
    print(json.dumps(stored.to_dict(), indent=2))


def cmd_policy_set(args: argparse.Namespace) -> None:
    """Replace the team's policy with the file's; print what is stored afterwards."""
    engine = _engine(args)
    # The database and the team first (a short unit of work), then the file: no lock is
    # held while standard input is read.
    with unit_of_work(engine) as uow:
        get_team(uow.conn, team_id=args.team)
    policy = read_policy_file(args.file)
    with unit_of_work(engine) as uow:
        stored = save_policy(uow.conn, args.team, policy, _operator())
        uow.commit()
    print(json.dumps(stored.to_dict(), indent=2))


def cmd_policy_history(args: argparse.Namespace) -> None:
    """Print a page of the team's policy changes, newest first, as JSON."""
    with unit_of_work(_engine(args)) as uow:
        get_team(uow.conn, team_id=args.team)
        page = policy_changes(uow.conn, args.team, limit=args.limit, offset=args.offset)
    print(json.dumps(page.to_dict(), indent=2))


def add_policy_commands(sub: Any) -> None:
    """Register ``policy show|set|history`` on the main parser."""
    policy = sub.add_parser("policy", help="show or change a team's calling policy")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    show = policy_sub.add_parser("show", help="print the team's calling policy as JSON")
    show.add_argument("--team", required=True, help="team id")
    show.set_defaults(func=cmd_policy_show)
    change = policy_sub.add_parser(
        "set", help="replace the policy with a JSON file's (missing keys take their defaults)"
    )
    change.add_argument("--team", required=True, help="team id")
    change.add_argument("file", metavar="FILE.json", help="the policy as JSON; - for stdin")
    change.set_defaults(func=cmd_policy_set)
    history = policy_sub.add_parser("history", help="the policy's changes, newest first")
    history.add_argument("--team", required=True, help="team id")
    history.add_argument("--limit", type=positive_int, default=50, help="page size (default 50)")
    history.add_argument("--offset", type=_offset, default=0, help="changes to skip")
    history.set_defaults(func=cmd_policy_history)
