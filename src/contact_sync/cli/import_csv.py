"""``contact-sync import FILE.csv --team ID``: contacts from a spreadsheet (docs/design.md §14).

The file is refused whole (exit 1, nothing written) when it is not UTF-8 or
its header names a column that is not a field; past that, every row is an
upsert with provenance ``import`` and a bad row is reported and skipped.
Rows go to the upsert service in chunks of ``CHUNK_ROWS``, each chunk its
own unit of work, so memory stays flat and a row that repeats a person sees
every earlier row of the file committed (or, inside a chunk, applied before
it). ``--dry-run`` runs every chunk in one unit of work that is never
committed: the counts are those of a real run, and nothing is written.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from contact_sync.accounts.teams import get_team
from contact_sync.clock import utcnow
from contact_sync.contacts.csv_rows import (
    Column,
    CustomKeyCheck,
    FileRefused,
    Problem,
    Row,
    check_encoding,
    chunked,
    column_of,
    map_header,
    numbered_rows,
    open_rows,
    read_header,
    read_records,
)
from contact_sync.contacts.duplicates import will_roll_back
from contact_sync.contacts.upsert import upsert_contacts
from contact_sync.db.engine import make_engine
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ContactSyncError
from contact_sync.fields.store import list_definitions
from contact_sync.settings import get_settings

CHUNK_ROWS = 2000
MATCH_KEYS = ("phone", "email")
SOURCE = "import"


class ImportRefused(ContactSyncError):
    """The file cannot be imported at all (exit 1); nothing was written."""

    code = 1


def match_keys(text: str) -> tuple[str, ...]:
    """``--match-on``: ``phone``, ``email`` or both, in the order to try them."""
    keys = tuple(key.strip() for key in text.split(","))
    if not keys or any(key not in MATCH_KEYS for key in keys) or len(set(keys)) != len(keys):
        raise argparse.ArgumentTypeError("expected phone, email, phone,email or email,phone")
    return keys


@dataclass
class Tally:
    """The counts of the summary line."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0

    def line(self) -> str:
        return (
            f"created={self.created} updated={self.updated} "
            f"unchanged={self.unchanged} failed={self.failed}"
        )


class Bar(Protocol):
    """What the import needs of a progress bar (tqdm's, enabled or not)."""

    n: float

    def update(self, n: float | None = ...) -> bool | None: ...


class Report(Protocol):
    """Where the problems of failed rows go."""

    def __call__(self, problem: Problem) -> None: ...


def _custom_key_check(engine: Engine, team_id: str) -> CustomKeyCheck:
    """Which ``cf.KEY`` columns the team takes: any, or with ``reject`` the defined ones."""
    with unit_of_work(engine) as uow:
        team = get_team(uow.conn, team_id=team_id)
        defined = {item.definition.key for item in list_definitions(uow.conn, team_id=team_id)}
    if team.undefined_custom_fields != "reject":
        return lambda key: None
    return lambda key: None if key in defined else "no such custom field is defined for this team"


def _upsert_chunk(
    conn: Connection,
    args: argparse.Namespace,
    chunk: list[Row],
    columns: Sequence[Column],
) -> Iterator[tuple[str, tuple[Problem, ...]]]:
    """Each row's status and problems, in file order; rows with problems are not sent."""
    good = [row for row in chunk if not row.problems]
    results = (
        upsert_contacts(
            conn,
            team_id=args.team,
            items=[row.body for row in good],
            match_on=args.match_on,
            source=SOURCE,
            now=utcnow(),
        )
        if good
        else []
    )
    by_number = {row.number: result for row, result in zip(good, results, strict=True)}
    for row in chunk:
        result = by_number.get(row.number)
        if result is None:
            yield "failed", row.problems
        elif result.status == "failed":
            found = tuple(
                Problem(row.number, column_of(error.field, columns), error.message)
                for error in result.errors
            )
            yield "failed", found or (Problem(row.number, "", "Not imported"),)
        else:
            yield result.status, ()


def _import_rows(
    engine: Engine,
    args: argparse.Namespace,
    rows: Iterable[Row],
    columns: Sequence[Column],
    report: Report,
    bar: Bar,
) -> Tally:
    tally = Tally()
    with ExitStack() as stack:
        dry_run = stack.enter_context(unit_of_work(engine)) if args.dry_run else None
        if dry_run is not None:
            will_roll_back(dry_run.conn)  # no key locks: a file's worth would fill the table
        for chunk in chunked(rows, CHUNK_ROWS):
            if dry_run is not None:
                outcomes = list(_upsert_chunk(dry_run.conn, args, chunk, columns))
            else:
                with unit_of_work(engine) as uow:
                    outcomes = list(_upsert_chunk(uow.conn, args, chunk, columns))
                    uow.commit()
            for status, problems in outcomes:
                setattr(tally, status, getattr(tally, status) + 1)
                for problem in problems:
                    report(problem)
            bar.update(chunk[-1].number - 1 - bar.n)
    return tally


@contextmanager
def _problem_report(errors_path: str | None, write_line: Callable[[str], None]) -> Iterator[Report]:
    """Problems as CSV rows ``row,column,message`` in ``--errors``, else lines on stderr."""
    if errors_path is None:

        def to_stderr(problem: Problem) -> None:
            where = f", column {problem.column}" if problem.column else ""
            write_line(f"row {problem.row}{where}: {problem.message}")

        yield to_stderr
        return
    try:
        out = open(errors_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        raise ImportRefused(f"cannot write {errors_path}: {exc.strerror or exc}") from None
    with out:
        writer = csv.writer(out)
        writer.writerow(("row", "column", "message"))
        yield lambda problem: writer.writerow((problem.row, problem.column, problem.message))


def cmd_import(args: argparse.Namespace) -> None:
    """Import a CSV file of contacts; the last line printed is the summary."""
    from tqdm import tqdm

    engine = make_engine(getattr(args, "database_url", None) or get_settings().database_url)
    path = Path(args.file)
    try:
        check_key = _custom_key_check(engine, args.team)  # an unknown team: before the file
        lines = check_encoding(path)
        with ExitStack() as stack:
            records = read_records(stack.enter_context(open_rows(path)))
            columns = map_header(read_header(records), check_key=check_key)
            bar = stack.enter_context(
                tqdm(
                    total=max(lines - 1, 0),
                    unit="row",
                    file=sys.stderr,
                    disable=not sys.stderr.isatty(),
                )
            )
            report = stack.enter_context(
                _problem_report(args.errors, lambda line: tqdm.write(line, file=sys.stderr))
            )
            rows = numbered_rows(records, columns)
            tally = _import_rows(engine, args, rows, columns, report, bar)
    except FileRefused as exc:
        raise ImportRefused(str(exc)) from None
    finally:
        engine.dispose()
    if args.dry_run:
        print("dry run: nothing was written", file=sys.stderr)
    print(tally.line())
    if tally.failed:
        raise SystemExit(2)


def add_import_command(sub: Any) -> None:
    """Register ``import`` on the main parser."""
    command = sub.add_parser(
        "import",
        help="create or update a team's contacts from a CSV file",
        description="Each row is an upsert (matched by phone, then email); the header names "
        "the API's fields (firstName or first_name), cf.KEY custom fields, and tags (a;b). "
        "Exit 0: every row imported; 2: some rows failed (see --errors); 1: the file was "
        "refused and nothing was written.",
    )
    command.add_argument("file", metavar="FILE.csv", help="UTF-8, with or without a BOM")
    command.add_argument("--team", required=True, help="team id")
    command.add_argument(
        "--match-on",
        type=match_keys,
        default=MATCH_KEYS,
        metavar="phone,email",
        help="the keys that find an existing contact, tried in order (default: phone,email)",
    )
    command.add_argument(
        "--dry-run", action="store_true", help="import nothing; print the counts it would give"
    )
    command.add_argument(
        "--errors",
        metavar="FILE.csv",
        help="write the failed rows' problems here (row,column,message) instead of stderr",
    )
    command.set_defaults(func=cmd_import)
