"""``contact-sync demo``: the whole flow on a fresh machine, no server needed.

A SQLite file holds the data and kombu's filesystem transport carries the
messages (a folder of files: nothing to install or start, and a real Celery
worker consumes it exactly as it would Redis). The demo creates a team and
contacts, publishes a few hundred realistic call events with duplicates and
out-of-order deliveries, lets a real worker process apply them, and prints
what changed.

Both are always the demo's own, whatever the environment or the flags say: a
demo run on a production host must not publish into the real queue or write
a demo team into the real database. Without ``--keep`` they live in a
temporary folder that is removed afterwards; with it, in a new folder of the
working directory.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from tqdm import tqdm

from contact_sync.accounts.teams import create_team
from contact_sync.calls.ledger_store import list_calls
from contact_sync.clock import utcnow
from contact_sync.contacts.store import create_contact, list_history
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.db.tables import contacts, dead_letters, processed_events
from contact_sync.scheduling.check import contact_eligibility
from contact_sync.settings import Settings, get_settings

FIRST = [
    "Maria",
    "James",
    "Aisha",
    "Wei",
    "Carlos",
    "Priya",
    "Tom",
    "Fatima",
    "Lukas",
    "Sofia",
    "Daniel",
    "Amara",
    "Kenji",
    "Elena",
    "Omar",
    "Grace",
    "Noah",
    "Zara",
]
LAST = [
    "Garcia",
    "Smith",
    "Okafor",
    "Chen",
    "Rossi",
    "Patel",
    "Nguyen",
    "Haddad",
    "Weber",
    "Novak",
    "Brown",
    "Mensah",
    "Sato",
    "Ivanova",
    "Khan",
    "Lee",
    "Miller",
    "Silva",
]
ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", None]
AREAS = ["202", "312", "415", "512", "617", "713", "305", "206"]
INTEREST = ["solar", "battery", "solar+battery", "ev-charger"]
ROOF = ["asphalt", "tile", "metal", "flat"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
SUMMARIES = [
    "Interested in a {kw} kW system; asked about financing.",
    "Wants a quote by {day}; roof is {roof}.",
    "Not ready yet, call back {day}.",
    "Comparing offers; budget around {budget}.",
]


def _phone(rng: random.Random) -> str:
    return f"+1{rng.choice(AREAS)}555{rng.randint(1000, 9999)}"


def _event(
    rng: random.Random, team_id: str, contact: dict[str, Any], n: int, at: datetime
) -> dict[str, Any]:
    day, roof, kw = rng.choice(DAYS), rng.choice(ROOF), rng.choice([4, 6, 8, 10])
    budget = rng.choice([15000, 25000, 40000, 60000])
    outcome = rng.choices(["completed", "voicemail", "no_answer"], [7, 2, 1])[0]
    event: dict[str, Any] = {
        "event_id": f"evt_demo_{n:05d}",
        "type": "call.completed",
        "schema_version": 1,
        "team_id": team_id,
        "call_id": f"call_demo_{n:05d}",
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "outcome": outcome,
        "duration_seconds": rng.randint(20, 600),
        "direction": "outbound",  # the campaign dialer called them
    }
    if contact.get("id") and rng.random() < 0.7:
        event["contact_id"] = contact["id"]
    else:
        event["phone"] = contact["phone_national"]  # national format: the team's region reads it
    if outcome == "completed":  # only a conversation has something to extract
        custom = _custom_fields(rng, day=day, roof=roof, kw=kw, budget=budget)
        summary = rng.choice(SUMMARIES).format(kw=kw, day=day, roof=roof, budget=budget)
        event["extraction"] = _extraction(rng, contact, custom, summary)
    return event


def _custom_fields(rng: random.Random, *, day: str, roof: str, kw: int, budget: int) -> Any:
    """What the extractor heard of the project, some with confidence and evidence."""
    return {
        "budget": {
            "value": budget,
            "confidence": round(rng.uniform(0.3, 0.99), 2),
            "evidence": f"about {budget // 1000} thousand",
        },
        "product_interest": rng.choice(INTEREST),
        "roof_type": rng.choice([roof, None]),
        "system_size_kw": {"value": kw, "confidence": round(rng.uniform(0.6, 0.99), 2)},
        "callback_day": rng.choice([day, None]),
    }


def _extraction(
    rng: random.Random, contact: dict[str, Any], custom: Any, summary: str
) -> dict[str, Any]:
    """An extraction of a completed call: sometimes a status, a contact field, tags, a DNC."""
    extraction: dict[str, Any] = {
        "extractor_version": "v3",
        "custom_fields": custom,
        "summary": summary,
    }
    if rng.random() < 0.5:
        extraction["lead_status"] = rng.choice(
            ["contacted", "qualified", "Qualified", "unqualified"]
        )
    if rng.random() < 0.3:
        extraction["contact"] = rng.choice(
            [
                {"job_title": rng.choice(["Homeowner", "Facilities Manager", "Owner"])},
                {"email": f"{contact['first_name'].lower()}@example.com"},
                {"timezone": rng.choice(["America/Chicago", "Mars/Olympus"])},  # one is invalid
            ]
        )
    if rng.random() < 0.015:
        extraction["do_not_call"] = True
    if rng.random() < 0.3:
        extraction["tags"] = rng.sample(["hot-lead", "financing", "referral", "callback"], 2)
    return extraction


def _seed(engine: Engine, rng: random.Random, count: int) -> tuple[str, list[dict[str, Any]]]:
    with engine.begin() as conn:
        team = create_team(conn, name="Sunny Roofs & Solar (demo)")
        made = []
        for i in range(count):
            phone = _phone(rng)
            data: dict[str, Any] = {
                "first_name": FIRST[i % len(FIRST)],
                "last_name": LAST[(i // len(FIRST) + i * 7) % len(LAST)],
                "phone": phone,
                "timezone": rng.choice(ZONES),
                "source": rng.choice(["website", "trade-show", "referral"]),
            }
            if i % 6 == 0:
                data["job_title"] = "Owner"  # set by a person: calls will not overwrite it
            contact = create_contact(conn, team_id=team.id, data=data)
            national = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
            made.append(
                {"id": contact.id, "first_name": contact.first_name, "phone_national": national}
            )
    return team.id, made


def build_events(
    rng: random.Random, team_id: str, people: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """Realistic events, then duplicates, bad ones and a shuffle (out-of-order delivery)."""
    start = datetime.now(UTC) - timedelta(days=14)
    events = []
    for n in range(count):
        at = start + timedelta(minutes=rng.randint(0, 14 * 24 * 60 - 30))
        events.append(_event(rng, team_id, rng.choice(people), n, at))
    newcomer = {"first_name": "Sam", "phone_national": "(415) 555-0142"}
    for k in range(3):  # an unknown caller: one contact is created, then updated
        extra = _event(rng, team_id, newcomer, count + k, start + timedelta(days=3 + k))
        extra.pop("contact_id", None)
        extra.update(phone=newcomer["phone_national"], direction="inbound")
        events.append(extra)
    # A re-analysis of a call (same call_id, a newer event): it replaces the call's row.
    summary = "Re-analysed: asked for a quote by email."
    events.append(
        {**events[4], "event_id": "evt_demo_reanalysed", "extraction": {"summary": summary}}
    )
    stranger = {k: v for k, v in events[3].items() if k != "contact_id"}
    bad = [
        {**events[0], "event_id": "evt_demo_bad_1", "contact_id": "no-such-contact"},
        {**events[1], "event_id": "evt_demo_bad_2", "schema_version": 2},
        {
            **events[2],
            "event_id": "evt_demo_bad_3",
            "occurred_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
        # The dialer called a number the CRM does not know: ops should see it.
        {**stranger, "event_id": "evt_demo_bad_4", "phone": "(415) 555-0199"},
    ]
    deliveries = events + bad + rng.sample(events, len(events) // 10)  # 10% delivered twice
    rng.shuffle(deliveries)
    return deliveries


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contact_sync.cli.main",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _print_summary(engine: Engine, team_id: str, deliveries: int, distinct: int) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            select(contacts)
            .where(contacts.c.team_id == team_id)
            .order_by(contacts.c.version.desc())
        ).all()
        outcomes: dict[str, int] = dict(
            conn.execute(
                select(processed_events.c.outcome, func.count())
                .where(processed_events.c.team_id == team_id)
                .group_by(processed_events.c.outcome)
            ).all()
        )
        letters = conn.execute(select(dead_letters).where(dead_letters.c.team_id == team_id)).all()
        changed = [r for r in rows if r.version > 1]
        print(
            f"\nDelivered {deliveries} messages for {distinct} distinct events: "
            f"{outcomes.get('applied', 0)} applied, "
            f"{outcomes.get('no_change', 0)} changed nothing, "
            f"{deliveries - distinct} duplicates absorbed, {len(letters)} dead-lettered.\n"
        )
        _print_contacts(rows, changed)
        print("\nDead letters (parked, replayable with `contact-sync dead-letters replay`):")
        for letter in letters:
            print(f"  {letter.event_id}: {letter.reason}: {letter.message[:80]}")
        if changed:
            _print_history(conn, team_id, changed[0])
        _print_calls(conn, team_id, rows)
        _print_eligibility(conn, team_id, rows)


def _print_eligibility(conn: Connection, team_id: str, rows: Sequence[Any]) -> None:
    """Whether the most called contact may be called now and at 02:00 UTC (night in the
    US), why not, and from when."""
    callable_rows = [r for r in rows if r.phone and not r.do_not_call] or list(rows)
    if not callable_rows:
        return
    star = max(callable_rows, key=lambda r: (r.call_count, r.last_name, r.id))
    now = utcnow().replace(second=0, microsecond=0)
    night = (now + timedelta(days=1)).replace(hour=2, minute=0)
    print(
        f"\nEligibility of {star.first_name} {star.last_name} ({star.phone}) under the team's "
        "calling policy (docs/design.md §12):"
    )
    for at in (now, night):
        answer = contact_eligibility(conn, team_id=team_id, contact_id=star.id, at=at)
        when = answer.next_eligible_at
        print(
            f"  at {at:%Y-%m-%d %H:%M} UTC: {'eligible' if answer.eligible else 'not eligible'}; "
            f"next eligible at: {f'{when:%Y-%m-%d %H:%M} UTC' if when else 'none within 14 days'}"
        )
        for reason in answer.reasons:
            print(f"      {reason.code}: {reason.detail}")


def _print_contacts(rows: Sequence[Any], changed: Sequence[Any]) -> None:
    """The most updated contacts, the statuses, who asked not to be called, who is new."""
    print(f"{len(changed)} of {len(rows)} contacts changed. The most updated:")
    print(f"  {'name':<18} {'version':>7}  {'status':<12} {'dnc':<5} custom fields")
    for r in changed[:10]:
        fields = ", ".join(f"{k}={v}" for k, v in sorted(r.custom_fields.items()))
        print(
            f"  {r.first_name + ' ' + r.last_name:<18} {r.version:>7}  {r.lead_status:<12} "
            f"{'yes' if r.do_not_call else 'no':<5} {fields[:70]}"
        )
    statuses = Counter(r.lead_status for r in rows)
    print("\nLead statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    dnc = [f"{r.first_name} {r.last_name}" for r in rows if r.do_not_call]
    print("Asked not to be called again: " + (", ".join(dnc) if dnc else "nobody"))
    for r in rows:
        if r.source == "inbound-call":
            print(f"New contact from an unknown caller: {r.first_name} {r.last_name} {r.phone}")


def _print_history(conn: Connection, team_id: str, star: Any) -> None:
    """The latest history records of one contact: what changed, what was skipped and why."""
    print(f"\nHistory of {star.first_name} {star.last_name} (newest first):")
    for record in list_history(conn, team_id=team_id, contact_id=star.id)[:6]:
        what = (
            ", ".join(
                f"{c['field']}: {json.dumps(c['old'])} → {json.dumps(c['new'])}"
                for c in record["changes"]
            )
            or "no change"
        )
        print(
            f"  v{record['version_before']}→v{record['version_after']} "
            f"[{record['source']}] {record['occurred_at']:%Y-%m-%d %H:%M} {what[:110]}"
        )
        for skip in record["skipped"][:2]:
            print(f"      skipped {skip['field']}={json.dumps(skip['value'])}: {skip['reason']}")
        if record["summary"]:
            print(f"      summary: {record['summary']}")


def _print_calls(conn: Connection, team_id: str, rows: Sequence[Any]) -> None:
    """A few contacts' calls from the ledger: one row per call, a re-analysis replaces it."""
    called = sorted(rows, key=lambda r: (-r.call_count, r.last_name, r.id))[:2]
    called += [r for r in rows if r.source == "inbound-call"][:1]  # who called in
    print("\nCalls of the most called contacts and the unknown caller (newest first):")
    for r in called:
        last = f"{r.last_called_at:%Y-%m-%d %H:%M}" if r.last_called_at else "never"
        print(
            f"  {r.first_name + ' ' + r.last_name:<18} {r.call_count} calls, "
            f"last {last} {r.last_call_outcome or ''}"
        )
        for call in list_calls(conn, team_id=team_id, contact_id=r.id, limit=3, offset=0):
            print(
                f"      {call['ended_at']:%Y-%m-%d %H:%M} {call['direction']:<8} "
                f"{call['outcome']:<10} {call['duration_seconds'] or 0:>4}s "
                f"{(call['summary'] or '')[:60]}"
            )


KEPT_FOLDER = "contact-sync-demo"
DATABASE_FILE = "demo.sqlite3"
# Environment variables that could lead the demo to a configured server: its own
# settings, and Celery's (CELERY_BROKER_URL overrides even an app's own broker URL).
_CONFIGURATION_PREFIXES = ("CONTACT_SYNC_", "CELERY_")


def _throwaway_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="contact-sync-demo-")).resolve()


def _new_kept_folder(parent: Path) -> Path:
    """``contact-sync-demo`` in ``parent``, or ``-2``, ``-3``… when a kept run is there."""
    for n in range(1, 10_000):
        folder = parent / (KEPT_FOLDER if n == 1 else f"{KEPT_FOLDER}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder.resolve()
    raise RuntimeError(f"no free {KEPT_FOLDER}-N folder name in {parent}")


@contextmanager
def _own_environment(database_url: str, broker_folder: Path) -> Iterator[dict[str, str]]:
    """Point every settings read of this process, and the worker's, at the demo's files.

    The configuration variables are removed for the demo's duration rather than
    overridden one by one, so that a setting added later cannot reach a real
    server either; the environment is restored afterwards.
    """
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith(_CONFIGURATION_PREFIXES):
            del os.environ[key]
    os.environ["CONTACT_SYNC_DATABASE_URL"] = database_url
    os.environ["CONTACT_SYNC_BROKER_URL"] = "filesystem://"
    os.environ["CONTACT_SYNC_BROKER_FOLDER"] = str(broker_folder)
    get_settings.cache_clear()
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


class _WorkerFailed(Exception):
    """The demo's worker died or did not finish in time; its log stays for a look."""


def _apply(
    engine: Engine,
    settings: Settings,
    env: dict[str, str],
    place: Path,
    *,
    contacts_count: int,
    events_count: int,
    seed: int,
) -> str:
    """Seed, publish, let a real worker apply, and summarise; returns the demo team's id."""
    upgrade(engine)
    rng = random.Random(seed)
    team_id, people = _seed(engine, rng, contacts_count)
    deliveries = build_events(rng, team_id, people, events_count)
    distinct = len({e["event_id"] for e in deliveries})
    print(
        f"Created team {team_id} with {contacts_count} contacts; publishing "
        f"{len(deliveries)} call events ({distinct} distinct, shuffled) to the file broker."
    )
    log = place / "worker.log"
    worker = _start_worker(env, log)
    try:
        _publish(settings, deliveries)
        _wait_until_applied(engine, team_id, distinct, worker, log)
        time.sleep(0.5)  # let the last duplicate deliveries be acknowledged
    finally:
        _stop(worker)
    log.unlink(missing_ok=True)
    _print_summary(engine, team_id, len(deliveries), distinct)
    return team_id


def _publish(settings: Settings, deliveries: list[dict[str, Any]]) -> None:
    """Send every delivery, unvalidated: the bad ones are for the worker to park."""
    from contact_sync.worker.celery_app import create_app
    from contact_sync.worker.publisher import EventPublisher

    with EventPublisher(app=create_app(settings), max_batch=20, validate_events=False) as publisher:
        for event in deliveries:
            publisher.publish(event)


def _wait_until_applied(
    engine: Engine, team_id: str, distinct: int, worker: subprocess.Popen[bytes], log: Path
) -> None:
    """Show progress until the worker has handled every distinct event (at most 3 minutes)."""
    done = 0
    deadline = time.monotonic() + 180
    with tqdm(total=distinct, unit="event", desc="applying", file=sys.stderr) as bar:
        while done < distinct:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise _WorkerFailed(str(log))
            with engine.connect() as conn:
                now_done = conn.execute(
                    select(func.count())
                    .select_from(processed_events)
                    .where(processed_events.c.team_id == team_id)
                ).scalar_one()
            bar.update(now_done - done)
            done = now_done
            time.sleep(0.1)


def run_demo(
    *, keep: bool, contacts_count: int = 36, events_count: int = 300, seed: int = 7
) -> int:
    """Run the demo on its own SQLite file and file broker; returns the exit code."""
    place = _new_kept_folder(Path.cwd()) if keep else _throwaway_folder()
    database_file = place / DATABASE_FILE
    broker_folder = place / "broker"
    database_url = f"sqlite:///{database_file}"
    print(
        f"demo: {'a SQLite file, kept afterwards,' if keep else 'a throwaway SQLite file'} at "
        f"{database_file} and a file broker at {broker_folder}; "
        "your configured database and broker are not touched.",
        flush=True,
    )
    keep_place = keep
    try:
        with _own_environment(database_url, broker_folder) as env:
            engine = make_engine(database_url)
            try:
                team_id = _apply(
                    engine,
                    Settings(),
                    env,
                    place,
                    contacts_count=contacts_count,
                    events_count=events_count,
                    seed=seed,
                )
            finally:
                engine.dispose()
    except _WorkerFailed as exc:
        keep_place = True  # for its log
        print(f"contact-sync: the demo worker failed; its log is {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(broker_folder, ignore_errors=True)
        if not keep_place:
            shutil.rmtree(place, ignore_errors=True)
    _print_where_the_data_is(place if keep else None, database_url, team_id)
    return 0


def _print_where_the_data_is(kept: Path | None, database_url: str, team_id: str) -> None:
    """How to look at the kept data, or that it is gone."""
    if kept is None:
        print("\nRemoved the demo data (run with --keep to explore it).")
        return
    print(
        f"\nKept the data in {kept}; look at it with\n"
        f"  contact-sync --database-url {shlex.quote(database_url)} "
        f"contacts list --team {team_id}"
    )
