"""Subcommands of the event path: ``worker``, ``publish`` and ``dead-letters``."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, get_args

from sqlalchemy import Engine

from contact_sync.calls.events import Reason
from contact_sync.db.engine import make_engine, safe_url
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

# A byte order mark: Windows tools start UTF-8 files with it, and ``cat`` of such
# files puts it at the start of later lines too. JSON may not begin with it.
_BOM = b"\xef\xbb\xbf"
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class BrokerUnreachable(Exception):
    """The broker did not answer; the message names its URL, password hidden."""


def command_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, this command's ``--database-url``/``--broker-url`` over them.

    Read afresh for each command, and handed on as a value (``create_app(settings)``).
    """
    overrides = {
        "database_url": getattr(args, "database_url", None),
        "broker_url": getattr(args, "broker_url", None),
    }
    return Settings().model_copy(update={k: v for k, v in overrides.items() if v})


def _check_broker(app: Celery, settings: Settings) -> None:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # kombu raises many kinds; all mean "not reachable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        url = safe_url(settings.broker_url)
        raise BrokerUnreachable(f"cannot reach broker {url}: {reason}") from None


def _check_database(settings: Settings) -> None:
    """Reach the database and find the schema there (a worker cannot apply events without)."""
    from contact_sync.db.migrate import schema_problem

    engine = make_engine(settings.database_url)
    try:
        problem = schema_problem(engine)
    finally:
        engine.dispose()
    if problem:
        raise SystemExit(_fail(f"the database at {safe_url(settings.database_url)} {problem}", 4))


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, not {value}")
    return value


def _batch_size(text: str) -> int:
    from contact_sync.calls.events import MAX_BATCH

    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_BATCH}, not {value}")
    return value


def cmd_worker(args: argparse.Namespace) -> None:
    """Run a Celery worker on the events queue (blocks until stopped)."""
    settings = command_settings(args)
    if args.remote_control:
        settings = settings.model_copy(update={"worker_remote_control": True})
    metrics_dir = None
    if args.metrics_port and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Before prometheus-client is first imported: it picks its storage then, and
        # reads it from the environment only (its pool children inherit it so).
        metrics_dir = tempfile.mkdtemp(prefix="contact-sync-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _run_worker(args, settings)
    finally:
        # The folder this process made (one per start: they would pile up in /tmp);
        # pool children leave through os._exit and never come here.
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_worker(args: argparse.Namespace, settings: Settings) -> None:
    from contact_sync.logs import configure_logging

    # JSON lines from the start: Celery warns (running as root) before it sets up logging.
    configure_logging(args.loglevel)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check's chatter
    from contact_sync.worker import QUEUE, create_app

    app = create_app(settings)
    if args.metrics_port:
        # First: a port taken is found in a moment, without waiting for any server.
        from contact_sync.worker.metrics_server import serve

        try:
            serve(args.metrics_port, app, QUEUE, host=args.metrics_host)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SystemExit(
                _fail(f"cannot serve metrics on port {args.metrics_port}: {reason}", 1)
            ) from None
    _check_database(settings)
    _check_broker(app, settings)

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


def _read_lines(name: str) -> tuple[Iterable[bytes], int | None]:
    """The lines of file ``name`` (``-``: standard input, read as it comes) and their count."""
    if name == "-":
        return sys.stdin.buffer, None
    try:
        with open(name, "rb") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise SystemExit(_fail(f"cannot read {name}: {exc.strerror or exc}", 2)) from None
    return lines, len(lines)


def _events(lines: Iterable[bytes], report: Any) -> Iterator[tuple[int, Any]]:
    """``(line number, event)`` for each line that holds one; ``report`` gets the others."""
    from contact_sync.calls.events import InvalidEvent
    from contact_sync.worker.publisher import validate

    for number, raw in enumerate(lines, start=1):
        line = raw.removeprefix(_BOM)
        if not line.strip():
            continue
        try:
            event = json.loads(line.decode("utf-8"))
            validate(event)
        except UnicodeDecodeError as exc:
            report(f"line {number}: not UTF-8 text (byte {exc.start + 1})")
        except json.JSONDecodeError as exc:
            report(f"line {number}: invalid JSON: {exc.msg}")
        except InvalidEvent as exc:
            report(f"line {number}: {exc.reason}: {exc.message}")
        else:
            yield number, event


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
    """Send a JSON-lines file (or standard input: ``-``) of events; invalid lines are skipped.

    Lines are UTF-8, with or without a byte order mark.
    """
    from kombu.exceptions import KombuError
    from tqdm import tqdm

    from contact_sync.worker import create_app
    from contact_sync.worker.publisher import EventPublisher

    settings = command_settings(args)
    lines, total = _read_lines(args.file)  # a missing file is told before any broker is tried
    app = create_app(settings)
    _check_broker(app, settings)
    invalid = 0

    def report(message: str) -> None:
        nonlocal invalid
        invalid += 1
        tqdm.write(message, file=sys.stderr)

    sent = messages = 0
    try:
        with (
            EventPublisher(app=app, max_batch=args.batch_size) as publisher,
            tqdm(total=total, unit="line", file=sys.stderr, disable=args.quiet) as bar,
        ):
            last = 0
            for number, event in _events(lines, report):
                bar.update(number - last)
                last = number
                publisher.publish(event)
                sent, messages = publisher.events_sent, publisher.messages_sent
            publisher.flush()
            bar.update((total or last) - last)
            sent, messages = publisher.events_sent, publisher.messages_sent
    except (KombuError, OSError) as exc:  # the broker went away while sending
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrokerUnreachable(
            f"lost broker {safe_url(settings.broker_url)} after {sent} events were sent: "
            f"{reason}; publishing the file again is safe (duplicates are ignored)"
        ) from None
    print(f"published {sent} events in {messages} messages; {invalid} invalid lines skipped")
    if invalid:
        raise SystemExit(2)


def cmd_dead_letters_list(args: argparse.Namespace) -> None:
    """Print a page of dead letters, newest first (``--limit`` from ``--offset``): every
    team's and those of no team, or one team's.

    The table reads no payload; ``--json`` gives whole letters, a page at a time.
    """
    from contact_sync.ops.dead_letters import list_dead_letter_lines, list_dead_letters

    if args.limit < 1 or args.offset < 0:
        raise SystemExit(_fail("--limit must be at least 1 and --offset at least 0", 2))
    page = {
        "include_replayed": not args.open,
        "team_id": args.team,
        "reason": args.reason,
        "limit": args.limit,
        "offset": args.offset,
    }
    with unit_of_work(make_engine(command_settings(args).database_url)) as uow:
        if args.json:
            letters = list_dead_letters(uow.conn, **page)
            print(json.dumps([letter.to_dict() for letter in letters]))
            return
        # One more than the page: whether to say there are more.
        lines = list_dead_letter_lines(uow.conn, **{**page, "limit": args.limit + 1})
    more, lines = len(lines) > args.limit, lines[: args.limit]
    if not lines:
        print("no dead letters" if args.offset == 0 else "no dead letters at this offset")
        return
    for line in lines:
        print(
            f"{line.id}  {line.reason:<26} {line.state:<9} attempts={line.attempts}  "
            f"team={line.team_id or '-'}  event={line.event_id or '-'}  {line.message}"
        )
    if more:
        print(f"more: --offset {args.offset + args.limit}")


def _operator() -> str:
    """Who acts from the command line, for a letter's record: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"[:100]
    except (OSError, KeyError):  # no login name in the environment nor in passwd
        return "cli"


def cmd_dead_letters_replay(args: argparse.Namespace) -> None:
    """Send dead letters through the apply path again; closes those that now go through.

    An erased letter (its contact was deleted) or a discarded one is refused:
    the event it was must not come back. ``--all`` skips them.
    """
    from contact_sync.ops.replays import EventInSeveralTeams, NoLetterToReplay, select_for_replay

    settings = command_settings(args)
    engine = make_engine(settings.database_url)
    try:
        with unit_of_work(engine) as uow:
            selection = select_for_replay(
                uow.conn, dead_letter_id=args.id, event_id=args.event_id, team_id=args.team
            )
    except NoLetterToReplay as exc:
        raise SystemExit(_fail(str(exc), 3)) from None
    except EventInSeveralTeams as exc:
        raise SystemExit(_fail(f"{exc}: name one with --team", 2)) from None
    outcomes, erased = _replay_each(engine, selection.letters, args.all, settings.min_confidence)
    erased += selection.erased
    if erased:
        print(f"skipped {erased} erased dead letters (their contacts were deleted)")
    if "dead_lettered" in outcomes:
        raise SystemExit(1)


def _replay_each(
    engine: Engine, letters: Sequence[Any], every: bool, min_confidence: float
) -> tuple[list[str], int]:
    """Replay each letter in a unit of work of its own; print each outcome.

    Returns the outcomes and how many letters turned out erased on the way
    (``every``: closed letters are skipped; one named alone is refused).
    """
    from contact_sync.clock import utcnow
    from contact_sync.ops.dead_letters import ClosedLetter, DeadLetterNotFound, ErasedLetter
    from contact_sync.ops.replays import replay_letter

    outcomes: list[str] = []
    erased = 0
    by = _operator()
    for listed in letters:
        try:
            with unit_of_work(engine) as uow:
                done = replay_letter(
                    uow.conn,
                    dead_letter_id=listed.id,
                    team_id=None,
                    by=by,
                    now=utcnow(),
                    min_confidence=min_confidence,
                )
                uow.commit()
        except ClosedLetter as exc:
            if not every:
                raise SystemExit(_fail(str(exc), 3)) from None
            erased += isinstance(exc, ErasedLetter)
            continue
        except DeadLetterNotFound:
            continue  # gone since it was listed: nothing to replay
        outcome = done.outcome
        outcomes.append(outcome.outcome)
        detail = f" ({outcome.reason}: {outcome.message})" if outcome.reason else ""
        print(f"{listed.id}: {outcome.outcome}{detail}")
    return outcomes, erased


def cmd_dead_letters_discard(args: argparse.Namespace) -> None:
    """Close a dead letter without applying it; it is kept, with who and when."""
    from contact_sync.clock import utcnow
    from contact_sync.ops.dead_letters import ReplayedLetter, discard

    engine = make_engine(command_settings(args).database_url)
    now = utcnow()
    try:
        with unit_of_work(engine) as uow:
            letter = discard(
                uow.conn, dead_letter_id=args.id, team_id=args.team, by=_operator(), now=now
            )
            uow.commit()
    except ReplayedLetter as exc:
        raise SystemExit(_fail(str(exc), 3)) from None
    when = letter.discarded_at.isoformat() if letter.discarded_at else "?"
    already = "" if letter.discarded_at == now else " already"
    print(f"{letter.id}:{already} discarded at {when} by {letter.discarded_by}")


def _fail(message: str, code: int) -> int:
    print(f"contact-sync: {message}", file=sys.stderr)
    return code


def add_event_commands(sub: Any) -> None:
    """Register ``worker``, ``worker-health``, ``publish`` and ``dead-letters``."""
    _add_worker_commands(sub)
    _add_publish_command(sub)
    _add_dead_letter_commands(sub)


def _add_worker_commands(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run a Celery worker on the events queue")
    worker.add_argument("--concurrency", type=positive_int, help="worker processes (default: CPUs)")
    worker.add_argument("--loglevel", default="info", type=str.lower, choices=_LOG_LEVELS)
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--hostname", help="Celery node name, e.g. worker1@%%h")
    worker.add_argument(
        "--metrics-port", type=port_number, help="serve Prometheus metrics on this port"
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics are served on (default: 127.0.0.1; 0.0.0.0 in a container)",
    )
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


def _add_publish_command(sub: Any) -> None:
    publish = sub.add_parser("publish", help="send events from a JSON-lines file")
    publish.add_argument("file", metavar="FILE.jsonl", help="UTF-8 JSON lines; - reads stdin")
    publish.add_argument(
        "--batch-size", type=_batch_size, default=500, help="events per message (1..500)"
    )
    publish.add_argument("--quiet", action="store_true", help="no progress bar")
    publish.set_defaults(func=cmd_publish)


def _add_dead_letter_commands(sub: Any) -> None:
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
    listing.add_argument("--limit", type=int, default=50, help="letters a page (default 50)")
    listing.add_argument("--offset", type=int, default=0, help="letters to skip (default 0)")
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
