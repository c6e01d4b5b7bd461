"""Subcommands of the event path: ``worker``, ``publish`` and ``dead-letters``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

from contact_sync.db.engine import make_engine, safe_url
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
    if args.remote_control:
        os.environ["CONTACT_SYNC_WORKER_REMOTE_CONTROL"] = "true"
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


def cmd_worker_health(args: argparse.Namespace) -> None:
    """Exit 0 while this host's worker consumes (its heartbeat file is fresh), else 1.

    What the image's health check runs: it needs neither the broker's
    remote control (off by default) nor a network port.
    """
    from pathlib import Path

    from contact_sync.worker.health import check, heartbeat_path

    path = Path(args.file) if args.file else heartbeat_path()
    problem = check(path, args.max_age)
    if problem is not None:
        raise SystemExit(_fail(problem, 1))
    print("healthy")


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
    """Print a page of dead letters, newest first (``--limit`` from ``--offset``).

    The table reads no payload; ``--json`` gives whole letters, a page at a time.
    """
    from contact_sync.dead_letters import list_dead_letter_lines, list_dead_letters

    _apply_overrides(args)
    if args.limit < 1 or args.offset < 0:
        raise SystemExit(_fail("--limit must be at least 1 and --offset at least 0", 2))
    page = {"include_replayed": not args.open, "limit": args.limit, "offset": args.offset}
    with make_engine(get_settings().database_url).connect() as conn:
        if args.json:
            letters = list_dead_letters(conn, **page)
            print(json.dumps([letter.to_dict() for letter in letters]))
            return
        # One more than the page: whether to say there are more.
        lines = list_dead_letter_lines(conn, **{**page, "limit": args.limit + 1})
    more, lines = len(lines) > args.limit, lines[: args.limit]
    if not lines:
        print("no dead letters" if args.offset == 0 else "no dead letters at this offset")
        return
    for line in lines:
        state = "erased" if line.erased_at else "replayed" if line.replayed_at else "open"
        print(
            f"{line.id}  {line.reason:<26} {state:<8} attempts={line.attempts}  "
            f"event={line.event_id or '-'}  {line.message}"
        )
    if more:
        print(f"more: --offset {args.offset + args.limit}")


def cmd_dead_letters_replay(args: argparse.Namespace) -> None:
    """Send dead letters through the apply path again; closes those that now go through.

    An erased letter (its contact was deleted) is refused: its payload is a
    tombstone, and the event it was must not come back. ``--all`` skips them.
    """
    from contact_sync.apply import apply_payloads
    from contact_sync.clock import utcnow
    from contact_sync.dead_letters import (
        ErasedLetter,
        get_dead_letter,
        list_dead_letter_lines,
        mark_replayed,
        take_for_replay,
    )

    _apply_overrides(args)
    engine = make_engine(get_settings().database_url)
    with engine.connect() as conn:
        letters: list[Any]
        if args.all:
            # Ids and states only: each payload is read under its lock, one at a time.
            letters = list_dead_letter_lines(conn, include_replayed=False)
        else:
            found = get_dead_letter(conn, dead_letter_id=args.id)
            if found is None:
                raise SystemExit(_fail(f"no dead letter {args.id}", 3))
            letters = [found]
    # A single letter that was erased is refused below, under its lock.
    erased = sum(1 for letter in letters if args.all and letter.erased_at is not None)
    letters = [letter for letter in letters if not (args.all and letter.erased_at is not None)]
    results: list[dict[str, Any]] = []
    for listed in letters:
        now = utcnow()
        with engine.begin() as conn:
            try:
                letter = take_for_replay(conn, dead_letter_id=listed.id)
            except ErasedLetter as exc:
                if not args.all:
                    raise SystemExit(_fail(str(exc), 3)) from None
                erased += 1
                continue
            if letter is None:
                continue  # gone since it was listed: nothing to replay
            [outcome] = apply_payloads(
                conn,
                [letter.payload],
                min_confidence=get_settings().min_confidence,
                now=now,
                dead_letter_id=letter.id,
            )
            if outcome.outcome != "dead_lettered":
                mark_replayed(conn, dead_letter_id=letter.id, now=now)
        results.append({"id": letter.id, "outcome": outcome.outcome, "reason": outcome.reason})
        detail = f" ({outcome.reason}: {outcome.message})" if outcome.reason else ""
        print(f"{letter.id}: {outcome.outcome}{detail}")
    if erased:
        print(f"skipped {erased} erased dead letters (their contacts were deleted)")
    if any(r["outcome"] == "dead_lettered" for r in results):
        raise SystemExit(1)


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
    worker.add_argument(
        "--remote-control",
        action="store_true",
        help="consume Celery's remote control (inspect, revoke, Flower); off by default",
    )
    worker.set_defaults(func=cmd_worker)

    health = sub.add_parser(
        "worker-health", help="exit 0 while this host's worker consumes (a health check)"
    )
    health.add_argument("--max-age", type=float, default=60.0, help="seconds (default 60)")
    health.add_argument("--file", help="the heartbeat file (CONTACT_SYNC_WORKER_HEARTBEAT_FILE)")
    health.set_defaults(func=cmd_worker_health)

    publish = sub.add_parser("publish", help="send events from a JSON-lines file")
    publish.add_argument("file", metavar="FILE.jsonl")
    publish.add_argument("--batch-size", type=int, default=500, help="events per message (1..500)")
    publish.add_argument("--broker-url", help="overrides CONTACT_SYNC_BROKER_URL")
    publish.add_argument("--quiet", action="store_true", help="no progress bar")
    publish.set_defaults(func=cmd_publish)

    letters = sub.add_parser("dead-letters", help="list or replay parked events")
    letters_sub = letters.add_subparsers(
        dest="dead_letters_command", required=True, metavar="ACTION"
    )
    listing = letters_sub.add_parser("list", help="list dead letters, newest first")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--open", action="store_true", help="only those not replayed yet")
    listing.add_argument("--limit", type=int, default=50, help="letters a page (default 50)")
    listing.add_argument("--offset", type=int, default=0, help="letters to skip (default 0)")
    listing.set_defaults(func=cmd_dead_letters_list)
    replay = letters_sub.add_parser("replay", help="apply a dead letter again")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", metavar="ID")
    target.add_argument("--all", action="store_true", help="every open dead letter")
    replay.set_defaults(func=cmd_dead_letters_replay)
