"""CSV import benchmark: ``contact-sync import`` of a realistic file into a fresh PostgreSQL.

Generates a CSV of people as a CRM export or a lead list has them (issue 16): national and
international number formats, about 5 % of rows repeating a person already in the file (the
same person, the number written another way), about 1 % bad rows (a number that cannot ring,
a broken address, a missing name, a bill that is no number, a zone that is no zone), a few
``cf.`` columns with loose values (``$240``, ``1.2k``, ``Flat``, ``yes``) and tags. It then
imports it twice through the real command, in a subprocess each time, into a database of its
own (``contact_sync_bench_import``, dropped and made again, migrated by the project's own
migrations), and prints for each run the time, rows/s, the peak RSS of the import process
(``os.wait4``'s resource usage of that child), and its summary line. The second run must say
``created=0 updated=0``; the targets are 100,000 rows in under 60 s and RSS under 300 MB.

Run from the repository root::

    python bench/import_contacts.py                    # 100,000 rows
    python bench/import_contacts.py --rows 5000        # while iterating
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import phonenumbers
import psycopg
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import create_team
from contact_sync.db.engine import make_engine, safe_url
from contact_sync.db.migrate import upgrade
from contact_sync.fields.store import define

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/contact_sync_bench_import"
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 300.0
DUPLICATE_SHARE = 0.05
BAD_SHARE = 0.01

FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth", "William", "Barbara", "Richard", "Susan", "José", "Zoë", "Chloé", "Łukasz",
         "Aoife", "Siobhán", "Nguyễn", "Mohammed", "Priya", "Wei", "Olga", "Søren"]  # fmt: skip
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "O'Neil",
        "Rodriguez", "Martinez", "Hernández", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas",
        "Taylor", "Moore", "Jackson", "Müller", "Dubois", "van der Berg", "Kowalski"]  # fmt: skip
AREA_CODES = ["212", "312", "415", "617", "713", "206", "303", "404", "305", "702", "512", "602"]
ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", ""]
TITLES = ["Owner", "Homeowner", "Facilities Manager", "CFO", "", "", "Operations Lead"]
SOURCES = ["web-form", "trade-show", "referral", "purchased-list", ""]
TAGS = ["solar", "vip", "roof", "battery", "ev", "callback", "spanish"]
ROOFS = ["flat", "Flat", "pitched", "Pitched roof", "metal", "tile", ""]
BILLS = ["$240", "180", "1.2k", "$95.50", "310", "", "$1,050"]
YES_NO = ["yes", "no", "Y", "N", "true", "false", ""]
HEADER = ["firstName", "lastName", "phone", "email", "jobTitle", "source", "timezone", "tags",
          "cf.monthly_bill", "cf.roof_type", "cf.homeowner", "cf.install_date"]  # fmt: skip
BAD_CELLS = {  # column index: a value that fails the row
    2: "555-0000",
    3: "someone@",
    1: "",
    8: "a lot",
    6: "Mars/Olympus_Mons",
}


def _unique(used: set[str], make: Any) -> str:
    """A valid number not given to anyone yet: two people never share one by chance (a
    shared number would make the second run update them back and forth)."""
    while True:
        text = make()
        parsed = phonenumbers.parse(text if text.startswith("+") else "+1" + text)
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        if phonenumbers.is_valid_number(parsed) and e164 not in used:
            used.add(e164)
            return str(text)


def _written(rng: random.Random, digits: str, style: int) -> str:
    """A US number as people write it: national forms mostly, international sometimes."""
    a, b, c = digits[:3], digits[3:6], digits[6:]
    forms = [f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"1{digits}"]
    return forms[style % len(forms)]


def _foreign(rng: random.Random) -> str:
    """A number of another country, written internationally (the team's region is US)."""
    return rng.choice(
        [
            f"+44 7{rng.randint(400, 999)} {rng.randint(100000, 999999)}",
            f"+49 30 {rng.randint(1000000, 9999999)}",
            f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} "
            f"{rng.randint(10, 99)}",
        ]
    )


def _us_digits(rng: random.Random) -> str:
    return f"{rng.choice(AREA_CODES)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"


def _person(rng: random.Random, index: int, used: set[str]) -> list[str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    if rng.random() < 0.05:
        phone = _unique(used, lambda: _foreign(rng))
    else:
        phone = _written(rng, _unique(used, lambda: _us_digits(rng)), index)
    email = f"{first.lower()}.{index}@example.com" if rng.random() < 0.7 else ""
    tags = ";".join(rng.sample(TAGS, rng.randint(0, 3)))
    day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" if rng.random() < 0.3 else ""
    return [
        first,
        last,
        phone,
        email,
        rng.choice(TITLES),
        rng.choice(SOURCES),
        rng.choice(ZONES),
        tags,
        rng.choice(BILLS),
        rng.choice(ROOFS),
        rng.choice(YES_NO),
        day,
    ]


def _again(rng: random.Random, person: list[str]) -> list[str]:
    """The same person once more, the number written another way (same E.164)."""
    again = list(person)
    phone = person[2]
    if not phone.startswith("+"):
        digits = "".join(ch for ch in phone if ch.isdigit())[-10:]
        again[2] = _written(rng, digits, rng.randint(0, 4))
    return again


def write_file(path: Path, rows: int, seed: int) -> tuple[int, int]:
    """The CSV of ``rows`` data rows; returns (repeated persons, bad rows)."""
    rng = random.Random(seed)
    people: list[list[str]] = []
    used: set[str] = set()
    repeats = bad = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for index in range(rows):
            roll = rng.random()
            if roll < DUPLICATE_SHARE and people:
                row = _again(rng, rng.choice(people))
                repeats += 1
            elif roll < DUPLICATE_SHARE + BAD_SHARE:
                row = _person(rng, index, used)
                column, value = rng.choice(list(BAD_CELLS.items()))
                row[column] = value
                bad += 1
            else:
                row = _person(rng, index, used)
                if len(people) < 50_000:
                    people.append(row)
            writer.writerow(row)
    return repeats, bad


def fresh_database(url: str) -> str:
    """Drop and create the database of ``url``, migrate it, and return a team id."""
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{parsed.database}"')
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            team = create_team(conn, name="Import Bench Solar", region="US")
            fields: list[dict[str, Any]] = [
                {"key": "monthly_bill", "label": "Monthly bill", "type": "number"},
                {
                    "key": "roof_type",
                    "label": "Roof",
                    "type": "select",
                    "options": [
                        {"value": "flat"},
                        {"value": "pitched", "aliases": ["pitched roof"]},
                        {"value": "metal"},
                        {"value": "tile"},
                    ],
                },
                {"key": "homeowner", "label": "Homeowner", "type": "boolean"},
                {"key": "install_date", "label": "Install date", "type": "date"},
            ]
            for data in fields:
                define(conn, team_id=team.id, data=data)
    finally:
        engine.dispose()
    return team.id


def run_import(url: str, path: Path, team_id: str, errors: Path) -> tuple[float, Any, str, int]:
    """One ``contact-sync import`` in a subprocess: (seconds, its resource usage, summary, exit).

    The resource usage is the child's own (``os.wait4``): its peak RSS, and its CPU
    time, which says how much of the time was the import's on a loaded machine.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    argv = [sys.executable, "-m", "contact_sync.cli.main", "--database-url", url, "import"]
    argv += [str(path), "--team", team_id, "--errors", str(errors)]
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stderr is not None
    out, err = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode not in (0, 2):
        sys.exit(f"import failed ({child.returncode}): {err.decode(errors='replace')}")
    summary = out.decode().strip().splitlines()[-1]
    return seconds, usage, summary, child.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--url", default=DEFAULT_URL, help="its database is dropped and made")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="contact-sync-import-bench-") as tmp:
        path = Path(tmp) / "contacts.csv"
        repeats, bad = write_file(path, args.rows, args.seed)
        size_mb = path.stat().st_size / 1e6
        print(f"file: {args.rows:,} rows, {size_mb:.1f} MB, {repeats:,} repeats, {bad:,} bad rows")
        team_id = fresh_database(args.url)
        print(f"database: {safe_url(args.url)} (fresh, migrated)")
        runs = []
        for name in ("first", "second"):
            seconds, usage, summary, code = run_import(
                args.url, path, team_id, Path(tmp) / f"{name}.errors.csv"
            )
            rss = usage.ru_maxrss / 1024
            runs.append((seconds, rss, summary))
            print(
                f"{name} run: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s, "
                f"peak RSS {rss:.0f} MB, CPU {usage.ru_utime + usage.ru_stime:.1f} s "
                f"(the import process; PostgreSQL's not counted), exit {code}: {summary}"
            )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    first, second = runs
    ok = (
        first[0] < TARGET_SECONDS * args.rows / 100_000
        and max(first[1], second[1]) < TARGET_RSS_MB
        and second[2].startswith("created=0 updated=0 ")
    )
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
