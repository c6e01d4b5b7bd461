"""Upsert throughput on PostgreSQL: items/s of ``upsert_contacts`` in import-sized chunks.

Makes a fresh database (``contact_sync_bench_upsert`` unless ``--url`` names another; never
``test``), migrated by the project's migrations, with one US team, then upserts a generated list
twice, in chunks of ``--chunk`` items, one transaction per chunk:

- the first pass mostly creates (national and E.164 numbers, mixed-case addresses, a few
  people repeated within the list, a few invalid rows);
- the second pass sends the same list again: every valid item is ``unchanged``.

Prints items/s and the status counts of each pass. Run from the repository root::

    .venv/bin/python bench/upsert_contacts.py                  # 20,000 items, chunks of 2,000
    .venv/bin/python bench/upsert_contacts.py --items 2000     # a quick look
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import create_team
from contact_sync.clock import utcnow
from contact_sync.contacts.upsert import upsert_contacts
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.db.unit_of_work import unit_of_work

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/contact_sync_bench_upsert"
FIRST = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda")
LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis")
TITLES = ("CTO", "Owner", "Facilities Manager", None)


def fresh_database(url: str) -> Engine:
    """Drop and create the bench's database, migrated."""
    target = make_url(url)
    if target.database in (None, "", "test", "postgres"):
        raise SystemExit(f"refusing to use database {target.database!r}")
    admin = target.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{target.database}"')
    engine = make_engine(url)
    upgrade(engine)
    return engine


def person(rng: random.Random, i: int) -> dict[str, Any]:
    """Person ``i``: a number in one of several forms, usually an address, a few fields."""
    digits = f"{555 + i // 10_000:03d}{i % 10_000:04d}"  # a valid exchange for 4M people
    forms = (
        f"+1202{digits}",
        f"(202) {digits[:3]}-{digits[3:]}",
        f"202.{digits[:3]}.{digits[3:]}",
    )
    item: dict[str, Any] = {
        "firstName": rng.choice(FIRST),
        "lastName": rng.choice(LAST),
        "phone": rng.choice(forms),
        "jobTitle": rng.choice(TITLES),
        "tags": ["import"],
    }
    if rng.random() < 0.7:
        item["email"] = f"{item['firstName']}.{i}@Example.com"
    if rng.random() < 0.3:
        item["customFields"] = {"roof_type": rng.choice(["flat", "gable"]), "bill": i % 400}
    return item


def items_for(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` items: ~2% repeat an earlier person, ~1% invalid."""
    rng = random.Random(seed)
    items = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.01:
            items.append({"firstName": "", "lastName": "Bad", "phone": "12"})
        elif roll < 0.03 and items:
            items.append(dict(rng.choice(items)))
        else:
            items.append(person(rng, i))
    return items


def one_pass(engine: Engine, team_id: str, items: list[dict[str, Any]], chunk: int) -> Counter[str]:
    """Upsert ``items`` in chunks, a transaction each; print the rate; the status counts."""
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    for start in range(0, len(items), chunk):
        with unit_of_work(engine) as uow:
            results = upsert_contacts(
                uow.conn,
                team_id=team_id,
                items=items[start : start + chunk],
                match_on=["phone", "email"],
                source="import",
                now=utcnow(),
            )
            uow.commit()
        counts.update(result.status for result in results)
    elapsed = time.perf_counter() - started
    print(
        f"{len(items)} items in {elapsed:.2f} s: {len(items) / elapsed:,.0f} items/s  "
        + " ".join(f"{k}={counts[k]}" for k in ("created", "updated", "unchanged", "failed"))
    )
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    args = parser.parse_args()
    engine = fresh_database(args.url)
    with unit_of_work(engine) as uow:
        team = create_team(uow.conn, name="Bench Solar")
        uow.commit()
    items = items_for(args.items)
    print("pass 1 (mostly creates):")
    one_pass(engine, team.id, items, args.chunk)
    print("pass 2 (the same list again):")
    second = one_pass(engine, team.id, items, args.chunk)
    assert second["created"] == 0, "a second pass created contacts"
    assert second["updated"] == 0, "a second pass changed contacts"
    engine.dispose()


if __name__ == "__main__":
    main()
