"""Subcommands of the event path: ``worker``, ``publish`` and ``dead-letters``."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
from typing import Any, get_args

from contact_sync.db.engine import make_engine, safe_url
from contact_sync.events import Reason
from contact_sync.settings import get_settings


class BrokerUnreachable(Exception):
    """The broker did not answer; the message names its URL, password hidden."""


def _apply_overrides(args: argparse.Namespace) -> None:
    # The Celery app reads settings at import: flags become environment first.
    if getattr(args, "database_url", None):
        os.environ["CONTACT_SYNC_DATABASE_URL"] = args.database_url
    if getattr(args, "broker_url", None):
        os.environ["CONTACT_SYNC_BROKER_URL"] = args.broker_url
    get_settings.cache_clear()


def _check_broker() -> None:
    from contact_sync.worker import app

    url = get_settings().broker_url
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # kombu raises many kinds; all mean "not reachable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrokerUnreachable(f"cannot reach broker {safe_url(url)}: {reason}") from None


def _check_database() -> None:
    from sqlalchemy import text

    with make_engine(get_settings().database_url).connect() as conn:
        conn.execute(text("SELECT 1"))


def cmd_worker(args: argparse.Namespace) -> None:
    """Run a Celery worker on the events queue (blocks until stopped)."""
    _apply_overrides(args)
    if args.metrics_port and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Before prometheus-client is first imported: it picks its storage then.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="contact-sync-metrics-")
    _check_database()
    _check_broker()
    from contact_sync.worker import QUEUE, app

    if args.metrics_port:
        from contact_sync.worker.metrics_server import serve

        serve(args.metrics_port, app, QUEUE)

    argv = [
        "worker",
        "--queues",
        QUEUE,
        "--loglevel",
        args.loglevel,
        "--pool",
        args.pool,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)


def cmd_publish(args: argparse.Namespace) -> None:
    """Send a JSON-lines file of events; invalid lines are reported and skipped."""
    # First: importing the publisher creates the Celery app from the settings,
    # so a --broker-url applied later would be checked but not published to.
    _apply_overrides(args)
    from tqdm import tqdm

    from contact_sync.events import InvalidEvent
    from contact_sync.publisher import EventPublisher, validate

    _check_broker()
    with open(args.file, encoding="utf-8") as handle:
        lines = handle.readlines()
    invalid = 0
    with (
        EventPublisher(max_batch=args.batch_size) as publisher,
        tqdm(total=len(lines), unit="event", file=sys.stderr, disable=args.quiet) as bar,
    ):
        for number, line in enumerate(lines, start=1):
            bar.update(1)
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                validate(event)
            except json.JSONDecodeError as exc:
                invalid += 1
                tqdm.write(f"line {number}: invalid JSON: {exc.msg}", file=sys.stderr)
                continue
            except InvalidEvent as exc:
                invalid += 1
                tqdm.write(f"line {number}: {exc.reason}: {exc.message}", file=sys.stderr)
                continue
            publisher.publish(event)
        publisher.flush()
        sent, messages = publisher.events_sent, publisher.messages_sent
    print(f"published {sent} events in {messages} messages; {invalid} invalid lines skipped")
    if invalid:
        raise SystemExit(2)


def cmd_dead_letters_list(args: argparse.Namespace) -> None:
    """Print the dead letters, newest first: every team's and those of no team, or one team's."""
    from contact_sync.dead_letters import list_dead_letters

    _apply_overrides(args)
    with make_engine(get_settings().database_url).connect() as conn:
        letters = list_dead_letters(
            conn, include_replayed=not args.open, team_id=args.team, reason=args.reason
        )
    if args.json:
        print(json.dumps([letter.to_dict() for letter in letters]))
        return
    if not letters:
        print("no dead letters")
        return
    for letter in letters:
        print(
            f"{letter.id}  {letter.reason:<26} {letter.state:<9} attempts={letter.attempts}  "
            f"team={letter.team_id or '-'}  event={letter.event_id or '-'}  "
            f"{letter.message[:100]}"
        )


def _operator() -> str:
    """Who acts from the command line, for a letter's record: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"[:100]
    except (OSError, KeyError):  # no login name in the environment nor in passwd
        return "cli"


def _by_event_id(conn: Any, event_id: str, team_id: str | None) -> str:
    """The letter to replay for an event id: its team's open one, else its newest."""
    from contact_sync.dead_letters import list_dead_letters

    letters = list_dead_letters(conn, team_id=team_id, event_id=event_id)
    where = f" in team {team_id}" if team_id else ""
    if not letters:
        raise SystemExit(_fail(f"no dead letter of event {event_id}{where}", 3))
    teams = {letter.team_id for letter in letters}
    if len(teams) > 1:
        raise SystemExit(
            _fail(
                f"event id {event_id} has dead letters in {len(teams)} teams: name one with --team",
                2,
            )
        )
    return next((letter for letter in letters if letter.is_open), letters[0]).id


def cmd_dead_letters_replay(args: argparse.Namespace) -> None:
    """Send dead letters through the apply path again; closes those that now go through.

    An erased letter (its contact was deleted) or a discarded one is refused:
    the event it was must not come back. ``--all`` skips them.
    """
    from contact_sync.clock import utcnow
    from contact_sync.dead_letters import (
        ClosedLetter,
        DeadLetterNotFound,
        ErasedLetter,
        get_dead_letter,
        list_dead_letters,
    )
    from contact_sync.replays import replay

    _apply_overrides(args)
    engine = make_engine(get_settings().database_url)
    with engine.connect() as conn:
        if args.all:
            letters = list_dead_letters(conn, include_replayed=False, team_id=args.team)
        else:
            wanted = args.id or _by_event_id(conn, args.event_id, args.team)
            found = get_dead_letter(conn, dead_letter_id=wanted, team_id=args.team)
            if found is None:
                where = f" in team {args.team}" if args.team else ""
                raise SystemExit(_fail(f"no dead letter {wanted}{where}", 3))
            letters = [found]
    # A single letter that was erased is refused below, under its lock.
    erased = sum(1 for letter in letters if args.all and letter.erased_at is not None)
    letters = [letter for letter in letters if not (args.all and letter.erased_at is not None)]
    results: list[dict[str, Any]] = []
    by = _operator()
    for listed in letters:
        try:
            with engine.begin() as conn:
                done = replay(
                    conn,
                    dead_letter_id=listed.id,
                    team_id=None,
                    by=by,
                    now=utcnow(),
                    min_confidence=get_settings().min_confidence,
                )
        except ClosedLetter as exc:
            if not args.all:
                raise SystemExit(_fail(str(exc), 3)) from None
            erased += isinstance(exc, ErasedLetter)
            continue
        except DeadLetterNotFound:
            continue  # gone since it was listed: nothing to replay
        outcome = done.outcome
        results.append({"id": listed.id, "outcome": outcome.outcome, "reason": outcome.reason})
        detail = f" ({outcome.reason}: {outcome.message})" if outcome.reason else ""
        print(f"{listed.id}: {outcome.outcome}{detail}")
    if erased:
        print(f"skipped {erased} erased dead letters (their contacts were deleted)")
    if any(r["outcome"] == "dead_lettered" for r in results):
        raise SystemExit(1)


def cmd_dead_letters_discard(args: argparse.Namespace) -> None:
    """Close a dead letter without applying it; it is kept, with who and when."""
    from contact_sync.clock import utcnow
    from contact_sync.dead_letters import ReplayedLetter, discard

    _apply_overrides(args)
    engine = make_engine(get_settings().database_url)
    now = utcnow()
    try:
        with engine.begin() as conn:
            letter = discard(
                conn, dead_letter_id=args.id, team_id=args.team, by=_operator(), now=now
            )
    except ReplayedLetter as exc:
        raise SystemExit(_fail(str(exc), 3)) from None
    when = letter.discarded_at.isoformat() if letter.discarded_at else "?"
    already = "" if letter.discarded_at == now else " already"
    print(f"{letter.id}:{already} discarded at {when} by {letter.discarded_by}")


def _fail(message: str, code: int) -> int:
    print(f"contact-sync: {message}", file=sys.stderr)
    return code


def add_event_commands(sub: Any) -> None:
    """Register ``worker``, ``publish`` and ``dead-letters`` on the main parser."""
    worker = sub.add_parser("worker", help="run a Celery worker on the events queue")
    worker.add_argument("--concurrency", type=int, help="worker processes (default: CPUs)")
    worker.add_argument("--loglevel", default="info")
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--hostname", help="Celery node name, e.g. worker1@%%h")
    worker.add_argument("--broker-url", help="overrides CONTACT_SYNC_BROKER_URL")
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    worker.set_defaults(func=cmd_worker)

    publish = sub.add_parser("publish", help="send events from a JSON-lines file")
    publish.add_argument("file", metavar="FILE.jsonl")
    publish.add_argument("--batch-size", type=int, default=500, help="events per message (1..500)")
    publish.add_argument("--broker-url", help="overrides CONTACT_SYNC_BROKER_URL")
    publish.add_argument("--quiet", action="store_true", help="no progress bar")
    publish.set_defaults(func=cmd_publish)

    letters = sub.add_parser("dead-letters", help="list, replay or discard parked events")
    letters_sub = letters.add_subparsers(
        dest="dead_letters_command", required=True, metavar="ACTION"
    )
    listing = letters_sub.add_parser("list", help="list dead letters, newest first")
    listing.add_argument("--json", action="store_true")
    listing.add_argument(
        "--open", action="store_true", help="only those neither replayed nor discarded"
    )
    listing.add_argument("--team", help="one team's (default: every team's, and of no team)")
    listing.add_argument("--reason", choices=get_args(Reason), help="only this reason code")
    listing.set_defaults(func=cmd_dead_letters_list)
    replay = letters_sub.add_parser("replay", help="apply a dead letter again")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", metavar="ID")
    target.add_argument("--event-id", help="the letter of this event (its open one)")
    target.add_argument("--all", action="store_true", help="every open dead letter")
    replay.add_argument(
        "--team", help="within this team (needed when the event id is in several teams)"
    )
    replay.set_defaults(func=cmd_dead_letters_replay)
    discarding = letters_sub.add_parser(
        "discard", help="close a dead letter without applying it (it is kept)"
    )
    discarding.add_argument("id", metavar="ID")
    discarding.add_argument("--team", help="only if the letter is this team's")
    discarding.set_defaults(func=cmd_dead_letters_discard)
