"""Throughput of the event worker, against its ceilings, measured side by side in one run.

The reference benchmark of issue 7 (targets: ours/ceiling >= 0.8, ours/naive >= 4,
batch/ceiling >= 5, batch/db >= 0.5, p99 <= 500 ms at 50 % of peak, RSS <= 200 MB a process).

Run from the repository root (PostgreSQL on 127.0.0.1:5432, the ``redis-server`` binary, and
RabbitMQ on 127.0.0.1:5672 with ``rabbitmqctl`` for the ``*_amqp`` modes)::

    python bench/worker_throughput.py                  # 20,000 events, all modes
    python bench/worker_throughput.py --events 2000    # a quick check
    python bench/worker_throughput.py --modes ceiling,ours --events 5000
    python bench/worker_throughput.py --modes ours,batch,ours_stock,batch_stock,ours_amqp,batch_amqp
    python bench/worker_throughput.py --broker amqp://guest:guest@127.0.0.1:5672/VHOST

The modes without a suffix run on a private ``redis-server`` (a free port, a temporary folder,
an append-only file synced every second as ``docker-compose.yml`` runs it), stopped and
deleted at the end: nothing of the machine's Redis is touched. ``--broker`` names another
broker instead, which the bench empties before every mode (a Redis database is flushed; on
RabbitMQ the project's quorum queue is purged, and the ceiling tries kombu's transport only:
the project's transport is Redis's). The ``*_amqp`` modes run on the RabbitMQ server of
``--amqp`` in a virtual host made for the run (``rabbitmqctl add_vhost``), deleted after it.

It creates the database ``contact_sync_bench_worker`` (dropped and re-created from a seeded
template before every mode, so each mode starts from the same state), migrates it with the
project's migrations, seeds 10 teams and 2,000 contacts with phones by ``COPY``, empties the
broker before every mode, and generates ``--events`` deliveries over those contacts: 10 %
are duplicate deliveries of an earlier event, 10 % of the distinct events are older than an
event of the same contact delivered before them; each carries 5-15 custom fields (some with a
confidence, some below the threshold, some null), 1-3 standard fields, and some lead statuses,
tags and do-not-call requests. 20 % name the contact only by its phone.

Modes (``--modes``, default all), each with 2 worker processes:

- ``ceiling``: a Celery no-op task (``bench/_noop_tasks.py``) draining the same messages; a
  few pool/prefetch configurations are tried on a sample and the best one drains them all;
- ``ours``: the real ``contact_sync.apply_call_completed``, one event per message, worker
  ``python -m contact_sync.cli.main worker --concurrency 2``;
- ``batch``: the real ``contact_sync.apply_call_completed_batch`` fed by the project's
  ``EventPublisher`` (batches of up to 500), same worker;
- ``ours_stock``, ``batch_stock``: the same worker (tasks, group-commit strategy, consumer,
  settings) on stock kombu's Redis transport (``bench/_stock_kombu_app.py``, started with
  ``celery -A _stock_kombu_app worker`` and the arguments ``contact-sync worker`` gives Celery):
  what the project's transport (bulk take, a loop turn's acknowledgements at once) adds;
- ``ours_amqp``, ``batch_amqp``: the same worker on RabbitMQ, the project's quorum queue;
- ``ours_typed``, ``batch_typed``: the same worker and workload on the project's transport,
  every team having defined the events' custom fields (``TYPED_FIELDS``: numbers, a select,
  a boolean, texts), so each loose value is coerced to its type or skipped (issue 15: within
  15 % of the untyped modes; the final state differs from theirs by design);
- ``naive``: one ORM transaction per event (``bench/_naive_tasks.py``), same Celery settings;
- ``db``: the events applied by raw psycopg from 2 threads, 100 events per transaction, five
  set-based statements each (lock/resolve, inbox insert, versioned update, history insert,
  inbox outcome), no Celery: a rough database limit;
- ``pg_limit``: PostgreSQL's limit for the batch path (issue 17): the exact statements and
  parameters ``apply_payloads`` sends for the workload (inbox claim and outcomes, locked
  lookups, contact inserts and updates, history, ledger read and upsert, the call fields'
  read), captured by running it untimed in batches of 500 over two halves of the teams,
  then replayed on a fresh copy of the database from 2 connections, a transaction a batch,
  with no Python merge or validation while timed.

Batch mode also reads the CPU seconds of the worker's pool processes (``/proc``) while it
drains: ``cpu_ms_per_event`` is that over the deliveries.

Throughput method: every message is published before the worker starts; the clock starts
when the worker takes its first message off the queue (so process start-up is not counted)
and stops when the last delivery is done. For the project's worker (every transport): the
inbox holds every distinct event and no message waits in the queue, both read live
(RabbitMQ's count of unacknowledged messages is statistics up to 5 s old, so the last
duplicates' acknowledgements are waited for after the clock stops, on every broker alike);
for the ceiling and ``naive``: nothing queued or unacknowledged. events/s counts
deliveries, duplicates included (they are work the worker must do).

Latency (``ours``, ``batch`` and their variants): with the worker still running, fresh
events are published at 50 % of the peak just measured for ``--latency-seconds``; a
bench-only trigger on the inbox sends ``pg_notify`` per inserted row, and PostgreSQL delivers
notifications at commit, so the listener sees each event when its transaction commits.
Latency = notification receipt minus the wall-clock time just before the publish call (the
batch figure includes the publisher's 50 ms linger; on RabbitMQ each publish waits for the
broker's confirmation). The figure from ``processed_events.processed_at`` is printed too, but that
column is stamped at transaction start, so it understates the latency.

RSS: ``VmHWM`` (peak resident set) of each worker process (main and forked children) from
``/proc``, read just before the worker is stopped. Correctness after each of the project
worker's modes: inbox rows = distinct events, no dead letters, one history record per
distinct event, contiguous versions, and the same final contact state in every mode.

The last line gives the ratios: ``ours/stock`` and ``batch/stock`` (the project's transport
against stock kombu's), ``ours_amqp/ours`` and ``batch_amqp/batch`` (RabbitMQ against it),
then those of the issue-7 targets, the p99 latency and the peak RSS, then issue 17's
``batch/pg_limit``, ``cpu_ms_per_event`` and ``ours/stock_noop`` (one-event messages against
stock Celery's no-op drain, its best configuration in the ceiling's sample), then issue
15's ``ours_typed/ours`` and ``batch_typed/batch``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from kombu.connection import Connection
from psycopg import sql
from sqlalchemy import text

from contact_sync.accounts.teams import name_key
from contact_sync.contacts.field_values import rebuild_all
from contact_sync.contacts.writer import refresh_call_fields
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import (
    QUEUE,
    TASK_APPLY,
    create_app,
    event_queues,
    queue_depth,
    uses_amqp,
)
from contact_sync.worker.publisher import EventPublisher, publish_event

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))  # tests.factories: the messages the tests send

from tests.factories import call_event, envelope, task_body, task_headers  # noqa: E402

from _naive_tasks import TASK_NAIVE, simple_merge  # noqa: E402
from _noop_tasks import TASK_NOOP  # noqa: E402
from chaos import AmqpBroker, HarnessError, PrivateRedis  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"
# BENCH_WORKER_DATABASE names another database, for runs side by side on one server.
DATABASE = os.environ.get("BENCH_WORKER_DATABASE", "contact_sync_bench_worker")
TEMPLATE = f"{DATABASE}_tpl"
# The broker of the modes without a suffix: this run's private Redis, or --broker.
BROKER_URL = ""
# The RabbitMQ server of the *_amqp modes (a virtual host is made there): --amqp.
AMQP_SERVER = "amqp://guest:guest@127.0.0.1:5672/"
ALL_MODES = (
    "ceiling", "ours", "batch", "ours_stock", "batch_stock", "ours_amqp", "batch_amqp",
    "ours_typed", "batch_typed", "naive", "db", "pg_limit",
)  # fmt: skip
# The project's worker on other transports: mode suffix -> (label, broker).
TRANSPORTS = {
    "": ("project's Redis transport", "redis"),
    "_stock": ("stock kombu Redis transport", "redis"),
    "_amqp": ("RabbitMQ quorum queue", "amqp"),
}
TEAMS = 10
CONTACTS = 2_000
PAST_CALLS = 5  # seeded calls a contact, each an applied event (seed_history)
SEEDED_EVENTS = CONTACTS * PAST_CALLS
# BENCH_WORKERS=1 runs one pool process: with two, batches of the 2,000 contacts wait for
# each other's row locks and duplicates' inbox claims (1,000-1,150 against 1,300-1,375 events/s).
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
DB_BATCH = 100
CALIBRATION_MESSAGES = 4_000
STALL_SECONDS = 30.0
# (label, pool, processes, concurrency per process, prefetch multiplier, transport)
CEILING_CONFIGS: tuple[tuple[str, str, int, int, int, str], ...] = (
    ("prefork c2 prefetch 4", "prefork", 1, 2, 4, "kombu"),
    ("prefork c2 prefetch 64", "prefork", 1, 2, 64, "kombu"),
    ("2 x solo prefetch 16", "solo", 2, 1, 16, "kombu"),
    ("prefork c2 prefetch 16, project transport", "prefork", 1, 2, 16, "project"),
    ("2 x solo prefetch 16, project transport", "solo", 2, 1, 16, "project"),
)
CUSTOM_KEYS = tuple(
    ["budget", "product_interest", "callback_day", "roof_type", "monthly_bill", "decision_maker"]
    + [f"field_{i:02d}" for i in range(24)]
)
JOB_TITLES = ("Owner", "CFO", "Facilities Manager", "Homeowner", "Buyer", "Office Manager")
TIMEZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
METHODS = ("phone", "email", "sms")
STATUSES = ("contacted", "qualified", "unqualified")
TAGS = ("hot-lead", "solar", "callback", "price-sensitive", "referral", "spanish")
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jon")


# ---------------------------------------------------------------- processes and clean-up


class Processes:
    """Every subprocess this run starts; ``stop_all`` kills each process group."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        self.logdir = Path(tempfile.mkdtemp(prefix="bench_worker_"))

    def start(self, argv: Sequence[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            list(argv), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # children left by a killed parent
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def peak_rss_mb(pids: Sequence[int]) -> dict[str, float]:
    """VmHWM in MB of each given process and of its children (labels ``main:PID``/``child``)."""
    result: dict[str, float] = {}
    for pid in pids:
        for label, each in [("main", pid)] + [("child", c) for c in _children(pid)]:
            try:
                status = Path(f"/proc/{each}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    result[f"{label}:{each}"] = int(line.split()[1]) / 1024
    return result


TICK = os.sysconf("SC_CLK_TCK")


def pool_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by the worker's pool processes (its children)."""
    return sum(cpu_seconds(child) for child in _children(pid))


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by one process; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


# ---------------------------------------------------------------- database


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(f"{PG}/postgres", autocommit=True)


def db_url(sqlalchemy: bool = True) -> str:
    return f"postgresql{'+psycopg' if sqlalchemy else ''}://postgres@127.0.0.1:5432/{DATABASE}"


def build_template(rng: random.Random) -> list[tuple[str, str, str]]:
    """Create, migrate and seed the template database; returns (contact id, team id, phone)."""
    with admin() as conn:
        for name in (DATABASE, TEMPLATE):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEMPLATE}"
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC) - timedelta(days=30)
    teams = [f"team_bench_{i:02d}" for i in range(TEAMS)]
    contacts = []
    with psycopg.connect(f"{PG}/{TEMPLATE}") as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO teams (id, name, name_key, default_region, calls_overwrite_people,"
                " created_at) VALUES (%s, %s, %s, 'US', false, %s)",
                [(t, f"Bench {t}", name_key(f"Bench {t}"), now) for t in teams],
            )
            with cur.copy(
                "COPY contacts (id, team_id, first_name, last_name, email, phone, lead_status,"
                " source, do_not_call, custom_fields, tags, provenance, version, created_at,"
                " updated_at) FROM STDIN"
            ) as copy:
                for i in range(CONTACTS):
                    cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                    team = teams[i % TEAMS]
                    phone = f"+1212{2_000_000 + i * 37:07d}"
                    contacts.append((cid, team, phone))
                    copy.write_row(
                        (cid, team, rng.choice(NAMES), "Seed", f"seed{i}@acme-solar.com", phone,
                         "new", "import", False, json.dumps(seed_fields(i)), "[]", "{}", 1, now,
                         now)
                    )  # fmt: skip
        seed_history(conn, contacts, now)
        conn.commit()
    with engine.begin() as sa_conn:
        rebuild_all(sa_conn)  # the seeded fields' side rows, as the migration's backfill makes
        refresh_call_fields(sa_conn, [cid for cid, _, _ in contacts])
    engine.dispose()
    # A database in service has statistics (autovacuum's); rows just copied have none, and
    # plans made without them read whole tables (docs/design.md §6, "Plans").
    with psycopg.connect(f"{PG}/{TEMPLATE}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return contacts


def seed_history(
    conn: psycopg.Connection[Any], contacts: Sequence[tuple[str, str, str]], before: datetime
) -> None:
    """``PAST_CALLS`` earlier calls a contact, each in the inbox and the calls ledger.

    A database in service holds the events it applied: plans made on empty
    tables read them whole once they are not (docs/design.md §6, "Plans").
    """
    past = [(i, k, *contact) for i, contact in enumerate(contacts) for k in range(PAST_CALLS)]
    with conn.cursor() as cur:
        with cur.copy(
            "COPY processed_events (team_id, event_id, contact_id, outcome, processed_at)"
            " FROM STDIN"
        ) as copy:
            for i, k, cid, team, _ in past:
                copy.write_row((team, f"past_{i}_{k}", cid, "applied", before))
        with cur.copy(
            "COPY calls (id, team_id, contact_id, call_id, event_id, direction, outcome,"
            " duration_seconds, ended_at, phone, recorded_at) FROM STDIN"
        ) as copy:
            for i, k, cid, team, phone in past:
                ended = before - timedelta(days=k + 1, minutes=i % 600)
                outcome = ("completed", "no_answer", "voicemail")[(i + k) % 3]
                copy.write_row(
                    (str(uuid.UUID(int=i * PAST_CALLS + k)), team, cid, f"past_call_{i}_{k}",
                     f"past_{i}_{k}", "outbound", outcome, 60, ended, phone, before)
                )  # fmt: skip


def seed_fields(index: int) -> dict[str, Any]:
    """The custom fields a seeded contact was imported with (none of the events' keys).

    A function of the index, not of the run's random stream: the events stay those of
    the seed. Contacts in service carry fields, and so rows in the typed side table.
    """
    sources = ("webinar", "referral", "ads", "expo")
    regions = ("north", "south", "east", "west", "central")
    return {
        "lead_source": sources[index % len(sources)],
        "region": regions[index % len(regions)],
        "employees": 1 + index * 7 % 500,
        "first_seen": f"2026-{1 + index % 12:02d}-{1 + index % 28:02d}",
    }


def reset_database() -> None:
    """A fresh copy of the seeded template, so every mode starts from the same state."""
    with admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(DATABASE), sql.Identifier(TEMPLATE)
            )
        )


def _typed_fields() -> list[dict[str, Any]]:
    """Definitions of every custom key the workload extracts (``_event``): its values are a
    mix of numbers, ``{value: number}`` and words, so each type coerces some and skips some."""
    words = ["solar", "heat pump", "battery"]
    fields: list[dict[str, Any]] = [
        {"key": "budget", "label": "Budget", "type": "number", "min": 0},
        {"key": "monthly_bill", "label": "Monthly bill", "type": "number"},
        {"key": "decision_maker", "label": "Decision maker", "type": "boolean"},
        {
            "key": "product_interest",
            "label": "Product",
            "type": "select",
            "options": [{"value": w.replace(" ", "_"), "label": w} for w in words],
        },
        {"key": "callback_day", "label": "Callback day", "type": "text"},
        {"key": "roof_type", "label": "Roof", "type": "text"},
    ]
    for index in range(24):
        kind = "number" if index < 12 else "text"
        fields.append({"key": f"field_{index:02d}", "label": f"Field {index}", "type": kind})
    return fields


def define_typed_fields() -> None:
    """Define ``_typed_fields`` in every team, through the project's own ``define``."""
    from contact_sync.fields.store import define

    engine = make_engine(db_url())
    try:
        with engine.begin() as conn:
            team_ids = conn.execute(text("SELECT id FROM teams ORDER BY id")).scalars().all()
            for team_id in team_ids:
                for body in _typed_fields():
                    define(conn, team_id=team_id, data=body)
    finally:
        engine.dispose()


def drop_databases() -> None:
    with admin() as conn:
        for name in (DATABASE, TEMPLATE):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# ---------------------------------------------------------------- events


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(
    rng: random.Random, event_id: str, contact: tuple[str, str, str], occurred: datetime
) -> dict[str, Any]:
    cid, team, phone = contact
    custom: dict[str, Any] = {}
    for key in rng.sample(CUSTOM_KEYS, rng.randint(5, 15)):
        kind = rng.random()
        if kind < 0.1:
            custom[key] = None
        elif kind < 0.5:
            custom[key] = {
                "value": rng.randint(1_000, 90_000),
                "confidence": round(rng.uniform(0.3, 1.0), 2),
                "evidence": "about that much",
            }
        elif kind < 0.8:
            custom[key] = rng.choice(("solar", "heat pump", "battery", "tuesday", "yes", "no"))
        else:
            custom[key] = rng.randint(0, 500)
    standard: dict[str, Any] = {}
    for name in rng.sample(
        ("email", "job_title", "first_name", "timezone", "method"), rng.randint(1, 3)
    ):
        if name == "email":
            standard["email"] = f"{rng.choice(NAMES).lower()}{rng.randint(1, 99)}@acme-solar.com"
        elif name == "job_title":
            standard["job_title"] = rng.choice(JOB_TITLES)
        elif name == "first_name":
            standard["first_name"] = rng.choice(NAMES)
        elif name == "timezone":
            standard["timezone"] = rng.choice(TIMEZONES)
        else:
            standard["preferred_contact_method"] = rng.choice(METHODS)
    extraction: dict[str, Any] = {
        "extractor_version": "v3",
        "custom_fields": custom,
        "contact": standard,
        "summary": "Interested; asked for a call back next week.",
    }
    roll = rng.random()
    if roll < 0.3:
        extraction["lead_status"] = rng.choice(STATUSES)
    elif roll < 0.302:
        extraction["lead_status"] = "do_not_contact"
    if rng.random() < 0.2:
        extraction["tags"] = rng.sample(TAGS, rng.randint(1, 2))
    if rng.random() < 0.005:
        extraction["do_not_call"] = True
    event = call_event(
        team,
        event_id=event_id,
        call_id=f"call_{event_id}",
        phone=phone,
        occurred_at=_iso(occurred),
        outcome=rng.choice(("completed",) * 8 + ("voicemail", "no_answer")),
        duration_seconds=rng.randint(5, 900),
        extraction=extraction,
    )
    if rng.random() < 0.8:
        event["contact_id"] = cid
    return event


@dataclass
class Workload:
    """What a mode is fed: deliveries in order, and how many distinct events they hold."""

    deliveries: list[dict[str, Any]]
    distinct: int
    out_of_order: int


def generate(
    rng: random.Random, contacts: Sequence[tuple[str, str, str]], total: int, prefix: str
) -> Workload:
    """``total`` deliveries: 10 % duplicates, 10 % of distinct events older than a predecessor."""
    duplicates = total // 10
    distinct = total - duplicates
    start = datetime.now(UTC) - timedelta(days=1)
    step = timedelta(seconds=min(1.0, 80_000 / max(distinct, 1)))
    last: dict[str, datetime] = {}
    ordered: list[tuple[float, dict[str, Any]]] = []
    late = 0
    for i in range(distinct):
        contact = rng.choice(contacts)
        occurred = start + step * i
        if contact[0] in last and rng.random() < 0.1:
            # Delivered after a newer event of the same contact.
            occurred = last[contact[0]] - timedelta(seconds=rng.uniform(1, 3600))
            late += 1
        else:
            last[contact[0]] = occurred
        ordered.append((float(i), _event(rng, f"{prefix}_{i:07d}", contact, occurred)))
    for _ in range(duplicates):
        index = rng.randrange(distinct)
        ordered.append((index + rng.uniform(1, 500), ordered[index][1]))
    ordered.sort(key=lambda pair: pair[0])
    return Workload([event for _, event in ordered], distinct, late)


def fresh_events(
    rng: random.Random, contacts: Sequence[tuple[str, str, str]], count: int, prefix: str
) -> list[dict[str, Any]]:
    """Distinct events of the last minutes, for the latency phase."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    return [
        _event(rng, f"{prefix}_{i:07d}", rng.choice(contacts), now + timedelta(milliseconds=i))
        for i in range(count)
    ]


# ---------------------------------------------------------------- Redis


def raw_message(task: str, args: list[Any]) -> bytes:
    """A Celery protocol-2 message as kombu's Redis transport stores it (docs/celery-message.md),
    with the headers Celery's own publisher adds."""
    headers = task_headers(
        task,
        parent_id=None,
        group=None,
        retries=0,
        eta=None,
        expires=None,
        timelimit=[None, None],
        argsrepr="(...)",
        kwargsrepr="{}",
        origin="bench",
        ignore_result=True,
    )
    headers["root_id"] = headers["id"]
    message = envelope(task_body(args), task, headers=headers)
    return message.encode()


class Broker:
    """The benchmark's broker: Redis (a list and kombu's unacked hash) or RabbitMQ."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.amqp = uses_amqp(url)
        self.redis = None if self.amqp else redis.Redis.from_url(url)
        self.ctl = shutil.which("rabbitmqctl") if self.amqp else None
        self._connection: Connection | None = None  # RabbitMQ: kept for the live counts

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()  # type: ignore[no-untyped-call]
            self._connection = None

    def flush(self) -> None:
        """Nothing queued (Redis: the database flushed; RabbitMQ: the queue purged)."""
        if self.redis is not None:
            self.redis.flushdb()
            return
        with Connection(self.url) as conn:  # type: ignore[no-untyped-call]
            channel = conn.channel()
            queue, _poison = event_queues()
            queue(channel).declare()  # type: ignore[no-untyped-call]
            channel.queue_purge(QUEUE)

    def push_all(self, task: str, payloads: Sequence[Any]) -> None:
        """One raw message per payload, oldest taken first."""
        if self.redis is not None:  # LPUSH in pipelined chunks (the worker takes from the right)
            for start in range(0, len(payloads), 1_000):
                pipe = self.redis.pipeline(transaction=False)
                for payload in payloads[start : start + 1_000]:
                    pipe.lpush(QUEUE, raw_message(task, [payload]))
                pipe.execute()
            return
        # Without a confirmation per message (this is set-up, not measured): the queue's
        # depth says when RabbitMQ holds them all.
        with Connection(self.url) as conn:  # type: ignore[no-untyped-call]
            channel = conn.channel()
            for payload in payloads:
                envelope = json.loads(raw_message(task, [payload]))
                message = channel.prepare_message(
                    base64.b64decode(envelope["body"]),
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers=envelope["headers"],
                    properties={"delivery_mode": 2},
                )
                channel.basic_publish(message, exchange="", routing_key=QUEUE)
        deadline = time.monotonic() + 120
        while self.queued() < len(payloads):
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ holds {self.queued()} of {len(payloads)} messages")
            time.sleep(0.05)

    def queued(self) -> int:
        """Messages waiting (not taken by a worker), read live on both brokers."""
        if self.redis is not None:
            return int(self.redis.llen(QUEUE))
        try:
            if self._connection is None:
                self._connection = Connection(self.url)  # type: ignore[no-untyped-call]
            return queue_depth(self._connection)
        except Exception:
            self.close()
            raise

    def idle(self) -> bool:
        """Nothing queued and nothing taken but unacknowledged."""
        if self.redis is not None:
            return self.queued() == 0 and int(self.redis.hlen("unacked")) == 0
        if self.ctl is None:  # AMQP itself counts only the waiting messages
            return self.queued() == 0
        vhost = urlsplit(self.url).path[1:] or "/"
        out = subprocess.run(
            [self.ctl, "list_queues", "-q", "-p", vhost, "name", "messages"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        counts = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        return counts.get(QUEUE, "0").strip() == "0"


# ---------------------------------------------------------------- measuring a drain


def inbox_count(conn: psycopg.Connection[Any]) -> int:
    """Events the worker took into the inbox (the seeded ones not counted)."""
    row = conn.execute("SELECT count(*) FROM processed_events").fetchone()
    return int(row[0]) - SEEDED_EVENTS if row else 0


def drain(
    client: Broker,
    procs: Sequence[subprocess.Popen[bytes]],
    messages: int,
    done: Callable[[], bool],
    timeout: float,
    progress: Callable[[], int] | None = None,
    on_start: Callable[[], None] | None = None,
) -> tuple[float, str]:
    """Seconds from the worker's first message taken to ``done()``, and a problem if any.

    ``on_start`` is called when the clock starts (the worker took its first message).

    If the broker holds nothing (queued or unacknowledged) and ``progress()`` has not moved for
    ``STALL_SECONDS``, messages were lost: the time to the last progress is returned with
    the problem, instead of waiting forever.
    """
    deadline = time.monotonic() + timeout
    while client.queued() >= messages:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the worker never took a message (see its log)")
        time.sleep(0.001)
    if on_start is not None:
        on_start()
    started = time.perf_counter()
    last_value, last_change = -1, started
    while not done():
        now = time.perf_counter()
        if progress is not None:
            value = progress()
            if value != last_value:
                last_value, last_change = value, now
            elif client.idle() and now - last_change > STALL_SECONDS:
                return last_change - started, (
                    f"STALLED: broker empty and no commit for {STALL_SECONDS:.0f} s;"
                    f" {value} inbox rows (messages lost?)"
                )
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the worker did not finish in time (see its log)")
        time.sleep(0.01)
    return time.perf_counter() - started, ""


def worker_env(broker_url: str = "", **extra: str) -> dict[str, str]:
    broker_url = broker_url or BROKER_URL
    env = dict(os.environ)
    env.update(
        CONTACT_SYNC_DATABASE_URL=db_url(),
        CONTACT_SYNC_BROKER_URL=broker_url,
        BENCH_DATABASE_URL=db_url(),
        BENCH_BROKER_URL=broker_url,
        PYTHONPATH=os.pathsep.join([str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    env.update(extra)
    return env


def celery_worker(
    runner: Processes,
    module: str,
    pool: str,
    concurrency: int,
    prefetch: int,
    name: str,
    transport: str = "kombu",
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "celery", "-A", module, "worker", "--queues", QUEUE,
        "--pool", pool, "--concurrency", str(concurrency), "--prefetch-multiplier", str(prefetch),
        "--loglevel", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", f"{name}@%h",
    ]  # fmt: skip
    env = worker_env(BENCH_PREFETCH=str(prefetch), BENCH_TRANSPORT=transport)
    return runner.start(argv, env, name)


def ours_worker(
    runner: Processes, name: str, broker_url: str, stock: bool = False
) -> subprocess.Popen[bytes]:
    """``contact-sync worker``; with ``stock``, the same worker on stock kombu's transport."""
    argv = [sys.executable, "-m", "contact_sync.cli.main", "worker", "--concurrency", str(WORKERS)]
    if stock:  # the arguments cli_events.cmd_worker gives Celery
        argv = [
            sys.executable, "-m", "celery", "-A", "_stock_kombu_app", "worker",
            "--queues", QUEUE, "--loglevel", "info", "--pool", "prefork", "--without-gossip",
            "--without-mingle", "--concurrency", str(WORKERS), "--hostname", f"{name}@%h",
        ]  # fmt: skip
    return runner.start(argv, worker_env(broker_url), name)


# ---------------------------------------------------------------- results


@dataclass
class ModeResult:
    """What one mode measured."""

    mode: str
    events: int
    seconds: float
    note: str = ""
    latency: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------- ceiling


def run_ceiling(runner: Processes, client: Broker, workload: Workload) -> ModeResult:
    payloads = workload.deliveries
    # The project's transport is a Redis transport.
    configs = tuple(c for c in CEILING_CONFIGS if not (client.amqp and c[5] == "project"))

    def once(config: tuple[str, str, int, int, int, str], count: int) -> float:
        _label, pool, processes, concurrency, prefetch, transport = config
        client.flush()
        client.push_all(TASK_NOOP, payloads[:count])
        procs = [
            celery_worker(runner, "_noop_tasks", pool, concurrency, prefetch, f"noop{i}", transport)
            for i in range(processes)
        ]
        try:
            return count / drain(client, procs, count, client.idle, 600)[0]
        finally:
            for proc in procs:
                runner.stop(proc)

    sample = min(len(payloads), CALIBRATION_MESSAGES)
    tried = {config[0]: once(config, sample) for config in configs}
    best = max(configs, key=lambda config: tried[config[0]])
    note = "; ".join(f"{label}: {rate:,.0f}/s" for label, rate in tried.items())
    rate = tried[best[0]] if sample == len(payloads) else once(best, len(payloads))
    # Stock kombu's best too: Celery's own per-message cost, which the figures measured.
    stock = max((c for c in configs if c[5] == "kombu"), key=lambda config: tried[config[0]])
    stock_rate = rate if stock == best else once(stock, len(payloads))
    result = ModeResult(
        "ceiling",
        len(payloads),
        len(payloads) / rate,
        f"best {best[0]} (sample of {sample}: {note}); stock kombu best {stock[0]}: "
        f"{stock_rate:,.0f}/s",
    )
    result.extra["stock"] = stock_rate
    return result


# ---------------------------------------------------------------- ours and batch


def install_notify_trigger(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_notify('bench_commit', NEW.event_id); RETURN NULL; END $$"
    )
    conn.execute(
        "CREATE TRIGGER bench_notify AFTER INSERT ON processed_events"
        " FOR EACH ROW EXECUTE FUNCTION bench_notify()"
    )


@contextmanager
def commit_listener() -> Iterator[dict[str, float]]:
    """Event id -> wall-clock time its commit was seen (NOTIFY is delivered at commit)."""
    seen: dict[str, float] = {}
    stop = threading.Event()
    conn = psycopg.connect(db_url(False), autocommit=True)
    conn.execute("LISTEN bench_commit")

    def listen() -> None:
        while not stop.is_set():
            for note in conn.notifies(timeout=0.2):
                seen[note.payload] = time.time()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)
        conn.close()


def check_correctness(conn: psycopg.Connection[Any], distinct: int) -> tuple[list[str], str]:
    """Problems found (empty: all good) and a digest of the final contact state."""
    problems = []
    inbox = inbox_count(conn)
    if inbox != distinct:
        problems.append(f"inbox rows {inbox} != distinct events {distinct}")
    row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    if row and row[0]:
        problems.append(f"{row[0]} dead letters")
    row = conn.execute("SELECT count(*) FROM contact_history").fetchone()
    if row and row[0] != distinct:
        problems.append(f"history records {row[0]} != distinct events {distinct}")
    row = conn.execute(
        """
        SELECT count(*) FROM (
            SELECT c.id, c.version,
                   count(h.id) FILTER (WHERE h.version_after = h.version_before + 1) AS bumps,
                   count(DISTINCT h.version_after)
                       FILTER (WHERE h.version_after = h.version_before + 1) AS distinct_bumps,
                   count(h.id) FILTER (WHERE h.version_after NOT IN (h.version_before,
                                                                     h.version_before + 1))
                       AS bad
            FROM contacts c LEFT JOIN contact_history h ON h.contact_id = c.id
            GROUP BY c.id, c.version
        ) s WHERE version <> 1 + bumps OR bumps <> distinct_bumps OR bad > 0
        """
    ).fetchone()
    if row and row[0]:
        problems.append(f"{row[0]} contacts with version gaps or repeats")
    row = conn.execute(
        "SELECT md5(string_agg(concat_ws('|', id, first_name, last_name, email, job_title,"
        " timezone, preferred_contact_method, lead_status, do_not_call, custom_fields::text,"
        " tags::text), ',' ORDER BY id)) FROM contacts"
    ).fetchone()
    return problems, str(row[0]) if row else ""


def run_ours(
    runner: Processes,
    client: Broker,
    workload: Workload,
    contacts: Sequence[tuple[str, str, str]],
    *,
    batch: bool,
    variant: str,
    latency_seconds: float,
    rng: random.Random,
) -> tuple[ModeResult, str]:
    """The project's worker applying the workload (``variant``: a key of TRANSPORTS)."""
    mode = ("batch" if batch else "ours") + variant
    app = create_app(Settings(database_url=db_url(), broker_url=client.url))
    if batch:
        with EventPublisher(app=app) as publisher:
            for event in workload.deliveries:
                publisher.publish(event)
        messages = publisher.messages_sent
    else:
        client.push_all(TASK_APPLY, workload.deliveries)
        messages = len(workload.deliveries)
    proc = ours_worker(runner, mode, client.url, stock=variant == "_stock")
    with psycopg.connect(db_url(False), autocommit=True) as conn:
        # Until every distinct event is committed and nothing waits in the queue: read live on
        # every broker (RabbitMQ's count of unacknowledged messages is statistics, seconds old).
        cpu_at_start: list[float] = []
        seconds, stalled = drain(
            client,
            [proc],
            messages,
            lambda: inbox_count(conn) >= workload.distinct and client.queued() == 0,
            900,
            lambda: inbox_count(conn),
            lambda: cpu_at_start.extend((pool_cpu_seconds(proc.pid), cpu_seconds(proc.pid))),
        )
        pool_cpu = pool_cpu_seconds(proc.pid) - cpu_at_start[0]
        main_cpu = cpu_seconds(proc.pid) - cpu_at_start[1]
        result = ModeResult(mode, len(workload.deliveries), seconds, f"{messages} messages")
        # The pool processes' CPU per delivery while draining (parse, merge, SQL, logs).
        result.extra["cpu_ms_per_event"] = pool_cpu * 1000 / len(workload.deliveries)
        result.note += f", pool CPU {result.extra['cpu_ms_per_event']:.3f} ms/event"
        # The main process's: reading the broker, decoding, handing messages to the pool.
        result.note += f", main {main_cpu * 1000 / len(workload.deliveries):.3f}"
        # The duplicates still held are acknowledged before anything is checked (not timed).
        idle_by = time.monotonic() + 60
        while not client.idle() and time.monotonic() < idle_by:
            time.sleep(0.5)
        problems, digest = check_correctness(conn, workload.distinct)
        retries = sum(
            "transient error, retrying" in line
            for line in (runner.logdir / f"{mode}.log").read_text(errors="replace").splitlines()
        )
        result.checks = [p for p in [stalled, *problems] if p] or ["ok"]
        result.checks.append(f"{retries} transient-error retries in the worker log")

        # Latency at half the peak just measured, the worker still running.
        rate = float(os.environ.get("BENCH_LATENCY_RATE") or result.rate / 2)
        count = max(50, min(len(workload.deliveries), int(rate * latency_seconds)))
        events = fresh_events(rng, contacts, count, f"lat_{mode}")
        install_notify_trigger(conn)
        published: dict[str, float] = {}
        with commit_listener() as committed:
            started = time.perf_counter()
            if batch:
                with EventPublisher(app=app) as publisher:
                    for i, event in enumerate(events):
                        _pace(started, i, rate)
                        published[event["event_id"]] = time.time()
                        publisher.publish(event)
            else:
                for i, event in enumerate(events):
                    _pace(started, i, rate)
                    published[event["event_id"]] = time.time()
                    publish_event(event, app=app)
            deadline = time.monotonic() + 120
            while len(committed) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            achieved = count / (time.perf_counter() - started)
        waits = [(committed[k] - t) * 1000 for k, t in published.items() if k in committed]
        stamped = {
            str(r[0]): r[1].timestamp()
            for r in conn.execute(
                "SELECT event_id, processed_at FROM processed_events WHERE event_id LIKE %s",
                (f"lat_{mode}_%",),
            )
        }
        starts = [(stamped[k] - t) * 1000 for k, t in published.items() if k in stamped]
        result.latency = {
            "rate": rate,
            "achieved": achieved,
            "events": count,
            "seen": len(waits),
            "p50": percentile(waits, 0.5),
            "p99": percentile(waits, 0.99),
            "max": max(waits, default=float("nan")),
            "start_p50": percentile(starts, 0.5),
            "start_p99": percentile(starts, 0.99),
        }
    result.rss_mb = peak_rss_mb([proc.pid])
    runner.stop(proc)
    return result, digest


def _pace(started: float, index: int, rate: float) -> None:
    delay = started + index / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


# ---------------------------------------------------------------- naive


def run_naive(runner: Processes, client: Broker, workload: Workload) -> ModeResult:
    client.push_all(TASK_NAIVE, workload.deliveries)
    proc = celery_worker(runner, "_naive_tasks", "prefork", WORKERS, 4, "naive")
    try:
        with psycopg.connect(db_url(False), autocommit=True) as conn:
            seconds, stalled = drain(
                client,
                [proc],
                len(workload.deliveries),
                lambda: inbox_count(conn) >= workload.distinct and client.idle(),
                3600,
                lambda: inbox_count(conn),
            )
        result = ModeResult("naive", len(workload.deliveries), seconds, "ORM, 1 txn/event")
        result.checks = [stalled] if stalled else []
        result.rss_mb = peak_rss_mb([proc.pid])
        return result
    finally:
        runner.stop(proc)


# ---------------------------------------------------------------- database limit

STATE_COLUMNS = (
    "first_name", "last_name", "email", "phone_secondary", "job_title", "timezone",
    "preferred_contact_method", "lead_status", "do_not_call",
)  # fmt: skip


def _apply_db_batch(conn: psycopg.Connection[Any], events: Sequence[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    with conn.transaction():
        by_id = [e["contact_id"] for e in events if e.get("contact_id")]
        by_phone = [e for e in events if not e.get("contact_id")]
        rows = conn.execute(
            f"SELECT id, team_id, phone, version, custom_fields, tags, provenance,"
            f" {', '.join(STATE_COLUMNS)} FROM contacts"
            " WHERE id = ANY(%s) OR (team_id, phone) IN"
            " (SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY id FOR NO KEY UPDATE",
            (by_id, [e["team_id"] for e in by_phone], [e["phone"] for e in by_phone]),
        ).fetchall()
        names = ["id", "team_id", "phone", "version", "custom_fields", "tags", "provenance"]
        states = {r[0]: dict(zip([*names, *STATE_COLUMNS], r, strict=True)) for r in rows}
        by_phone_key = {(s["team_id"], s["phone"]): cid for cid, s in states.items()}
        target: dict[str, str] = {}
        for e in events:
            cid = e.get("contact_id") or by_phone_key.get((e["team_id"], e["phone"]))
            if cid is not None and cid in states and states[cid]["team_id"] == e["team_id"]:
                target[e["event_id"]] = cid
        unique = {e["event_id"]: e for e in events if e["event_id"] in target}
        claimed = {
            str(r[0])
            for r in conn.execute(
                "INSERT INTO processed_events"
                " (event_id, team_id, contact_id, outcome, processed_at)"
                " SELECT e, t, c, 'applied', %s FROM unnest(%s::text[], %s::text[], %s::text[])"
                " AS u(e, t, c) ON CONFLICT (team_id, event_id) DO NOTHING RETURNING event_id",
                (
                    now,
                    list(unique),
                    [e["team_id"] for e in unique.values()],
                    [target[k] for k in unique],
                ),
            )
        }
        history: list[tuple[Any, ...]] = []
        quiet: list[str] = []
        touched: dict[str, int] = {}
        for event in sorted(
            (unique[k] for k in claimed), key=lambda e: (target[e["event_id"]], e["event_id"])
        ):
            cid = target[event["event_id"]]
            state = states[cid]
            touched.setdefault(cid, state["version"])
            changes = simple_merge(state, event)
            before = state["version"]
            if changes:
                state["version"] += 1
            else:
                quiet.append(event["event_id"])
            history.append(
                (str(uuid.uuid4()), cid, event["team_id"], before, state["version"],
                 event["event_id"], event["call_id"], event["occurred_at"], json.dumps(changes),
                 (event.get("extraction") or {}).get("summary"))
            )  # fmt: skip
        changed = [cid for cid, version in touched.items() if states[cid]["version"] != version]
        if changed:
            columns = [[states[c][name] for c in changed] for name in STATE_COLUMNS]
            conn.execute(
                "UPDATE contacts AS c SET first_name = u.fn, last_name = u.ln, email = u.em,"
                " phone_secondary = u.ps, job_title = u.jt, timezone = u.tz,"
                " preferred_contact_method = u.pm, lead_status = u.ls, do_not_call = u.dnc,"
                " custom_fields = u.cf::jsonb, tags = u.tg::jsonb, provenance = u.pv::jsonb,"
                " version = u.v, updated_at = %s"
                " FROM unnest(%s::text[], %s::int[], %s::int[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bool[],"
                " %s::text[], %s::text[], %s::text[])"
                " AS u(id, expected, v, fn, ln, em, ps, jt, tz, pm, ls, dnc, cf, tg, pv)"
                " WHERE c.id = u.id AND c.version = u.expected",
                (
                    now,
                    changed,
                    [touched[c] for c in changed],
                    [states[c]["version"] for c in changed],
                    *columns,
                    [json.dumps(states[c]["custom_fields"]) for c in changed],
                    [json.dumps(states[c]["tags"]) for c in changed],
                    [json.dumps(states[c]["provenance"]) for c in changed],
                ),
            )
        if history:
            conn.execute(
                "INSERT INTO contact_history (id, contact_id, team_id, version_before,"
                " version_after, source, event_id, call_id, occurred_at, recorded_at, changes,"
                " skipped, summary) SELECT i, c, t, vb, va, 'call', e, k, o, %s, ch::jsonb,"
                " '[]'::jsonb, s FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[],"
                " %s::int[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[])"
                " AS u(i, c, t, vb, va, e, k, o, ch, s)",
                (now, *[list(column) for column in zip(*history, strict=True)]),
            )
        if quiet:
            conn.execute(
                "UPDATE processed_events SET outcome = 'no_change' WHERE event_id = ANY(%s)",
                (quiet,),
            )


def run_in_threads(work: Callable[[Any], None], parts: Sequence[Any]) -> float:
    """Run ``work`` on each part in a thread of its own, all at once: the wall seconds.

    The first error a thread raised is raised here, after all of them ended.
    """
    errors: list[BaseException] = []

    def guarded(part: Any) -> None:
        try:
            work(part)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(part,)) for part in parts]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds


def run_db(workload: Workload) -> ModeResult:
    parts: list[list[dict[str, Any]]] = [[] for _ in range(WORKERS)]
    for event in workload.deliveries:
        parts[hash(event["phone"]) % WORKERS].append(event)

    def work(events: list[dict[str, Any]]) -> None:
        with psycopg.connect(db_url(False)) as conn:
            for start in range(0, len(events), DB_BATCH):
                _apply_db_batch(conn, events[start : start + DB_BATCH])

    seconds = run_in_threads(work, parts)
    result = ModeResult("db", len(workload.deliveries), seconds, "psycopg, 2 threads, 100/txn")
    with psycopg.connect(db_url(False), autocommit=True) as conn:
        if inbox_count(conn) != workload.distinct:
            result.checks.append(f"inbox rows {inbox_count(conn)} != {workload.distinct}")
    return result


# ---------------------------------------------------------------- PostgreSQL's limit

# One statement as the batch path sent it: (SQL, parameters, executemany).
Statement = tuple[str, Any, bool]


def _partition(deliveries: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The deliveries in ``WORKERS`` parts of whole teams (no contact, inbox key or call in two
    parts, so two connections replaying them never change one row), in delivery order."""
    parts: list[list[dict[str, Any]]] = [[] for _ in range(WORKERS)]
    for event in deliveries:
        parts[int(event["team_id"].rsplit("_", 1)[1]) % WORKERS].append(event)
    return parts


def capture_statements(workload: Workload) -> list[list[list[Statement]]]:
    """Apply the workload with the real batch path, untimed, recording every statement it sends.

    Per part (``_partition``), per batch of ``MAX_BATCH`` events (what ``EventPublisher`` sends a
    message), the statements of its transaction with the parameters psycopg received: parse,
    validation, merge and SQLAlchemy all ran here, so a replay is PostgreSQL's work alone.
    """
    from sqlalchemy import event as sa_event

    from contact_sync.calls.apply import apply_payloads
    from contact_sync.calls.events import MAX_BATCH

    engine = make_engine(db_url())
    sink: list[Statement] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        # A page of "insertmanyvalues" is reported as part of an executemany but sent as one
        # statement with one set of parameters.
        sink.append((statement, params, many and not isinstance(params, Mapping)))

    sa_event.listen(engine, "before_cursor_execute", record)
    captured: list[list[list[Statement]]] = []
    try:
        for part in _partition(workload.deliveries):
            batches: list[list[Statement]] = []
            for start in range(0, len(part), MAX_BATCH):
                with engine.connect() as conn:
                    sink.clear()
                    apply_payloads(conn, part[start : start + MAX_BATCH])
                    conn.commit()
                    batches.append(list(sink))
            captured.append(batches)
    finally:
        engine.dispose()
    return captured


def _replay(batches: Sequence[Sequence[Statement]]) -> None:
    with psycopg.connect(db_url(False)) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # as db/engine.py sets every connection
        conn.commit()
        with conn.cursor() as cur:
            for statements in batches:
                with conn.transaction():
                    for statement, params, many in statements:
                        if many:
                            cur.executemany(statement, params)
                        else:
                            cur.execute(statement, params)
                        if cur.description is not None:
                            cur.fetchall()


def run_pg_limit(workload: Workload) -> ModeResult:
    """The batch path's exact statements and parameters, replayed from ``WORKERS`` connections.

    Captured by running ``apply_payloads`` on a copy of the database (not timed), then replayed
    on a fresh copy: inbox claims and outcomes, contact lookups and locks, contact updates,
    history rows, ledger reads and upserts, the call fields' read, everything the path
    sends, batch by batch, one transaction each, with nothing computed in Python while timed.
    """
    captured = capture_statements(workload)
    statements = sum(len(batch) for part in captured for batch in part)
    reset_database()
    seconds = run_in_threads(_replay, captured)
    batches = sum(len(part) for part in captured)
    result = ModeResult(
        "pg_limit",
        len(workload.deliveries),
        seconds,
        f"the batch path's {statements} statements in {batches} transactions, replayed from "
        f"{WORKERS} connections",
    )
    with psycopg.connect(db_url(False), autocommit=True) as conn:
        problems, _digest = check_correctness(conn, workload.distinct)
        result.checks = problems or ["ok"]
    return result


# ---------------------------------------------------------------- report


def report(results: dict[str, ModeResult], digests: dict[str, str], workload: Workload) -> None:
    print()
    print(
        f"{len(workload.deliveries):,} deliveries = {workload.distinct:,} distinct events"
        f" + {len(workload.deliveries) - workload.distinct:,} duplicates;"
        f" {workload.out_of_order:,} delivered after a newer event of their contact;"
        f" {CONTACTS:,} contacts in {TEAMS} teams; {WORKERS} worker processes"
    )
    print()
    print(f"{'mode':<11} {'events/s':>10} {'seconds':>8}  notes")
    for mode in ALL_MODES:
        if mode in results:
            r = results[mode]
            print(f"{mode:<11} {r.rate:>10,.0f} {r.seconds:>8.2f}  {r.note}")

    def ratio(a: str, b: str) -> float:
        if a in results and b in results and results[b].rate:
            return results[a].rate / results[b].rate
        return float("nan")

    ratios = {
        "ours/ceiling": ratio("ours", "ceiling"),
        "ours/naive": ratio("ours", "naive"),
        "batch/ceiling": ratio("batch", "ceiling"),
        "batch/db": ratio("batch", "db"),
    }
    targets = {"ours/ceiling": 0.8, "ours/naive": 4.0, "batch/ceiling": 5.0, "batch/db": 0.5}
    print()
    for name, value in ratios.items():
        verdict = "" if value != value else ("  ok" if value >= targets[name] else "  MISSED")
        print(f"{name:<14} {value:6.2f}   (target >= {targets[name]}){verdict}")
    # What bounds ours: Celery's per-message cost with stock kombu, and the database's.
    stock = results["ceiling"].extra.get("stock") if "ceiling" in results else None
    if stock and "ours" in results:
        value = results["ours"].rate / stock
        verdict = "  ok" if value >= 2.0 else "  MISSED"
        print(
            f"{'ours/stock_noop':<14} {value:6.2f}   (target >= 2: stock Celery's no-op drain,"
            f" its best configuration){verdict}"
        )
    print(f"{'ours/db':<14} {ratio('ours', 'db'):6.2f}   (the database limit, no Celery)")
    print(
        f"{'batch/pg_limit':<14} {ratio('batch', 'pg_limit'):6.2f}   (target >= 0.7: the batch"
        " path's own statements replayed, no Python)"
    )
    cpu = results["batch"].extra.get("cpu_ms_per_event") if "batch" in results else None
    if cpu is not None:
        print(f"{'cpu_ms/event':<14} {cpu:6.3f}   (target <= 0.35: batch mode's pool processes)")
    for base in ("ours", "batch"):
        value = ratio(f"{base}_typed", base)
        if value == value:
            verdict = "  ok" if value >= 0.85 else "  MISSED"
            print(f"{base + '_typed/' + base:<14} {value:6.2f}   (target >= 0.85){verdict}")
    print()
    # The transport's share: the same worker, the same group commit, three transports.
    appliers = [m for m in ALL_MODES if m.partition("_")[0] in ("ours", "batch")]
    if any(m in results for m in appliers):
        print(f"{'the project worker on':<30} {'ours ev/s':>10} {'batch ev/s':>11}")
        for variant, (label, _broker) in TRANSPORTS.items():
            rates = [
                f"{results[m].rate:,.0f}" if (m := base + variant) in results else "-"
                for base in ("ours", "batch")
            ]
            print(f"{label:<30} {rates[0]:>10} {rates[1]:>11}")
        print()
    p99s: list[float] = []
    for mode in appliers:
        if mode not in results:
            continue
        lat = results[mode].latency
        p99s.append(lat["p99"])
        print(
            f"latency {mode:<11} at {lat['rate']:,.0f}/s offered ({lat['achieved']:,.0f}/s"
            f" achieved, {int(lat['seen'])}/{int(lat['events'])} seen):"
            f" publish->commit p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms"
            f" max {lat['max']:.1f} ms | publish->txn start (processed_at)"
            f" p50 {lat['start_p50']:.1f} ms p99 {lat['start_p99']:.1f} ms"
        )
    rss_all: list[float] = []
    for mode in (*appliers, "naive"):
        if mode in results and results[mode].rss_mb:
            rss = results[mode].rss_mb
            rss_all += [v for k, v in rss.items() if mode != "naive"]
            shown = ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss.items()))
            print(f"peak RSS MB {mode:<11} {shown}")
    for mode in (*appliers, "naive", "db", "pg_limit"):
        if mode in results and results[mode].checks:
            print(f"correctness {mode:<11} {'; '.join(results[mode].checks)}")
    if len(digests) > 1:
        same = len(set(digests.values())) == 1
        print(f"final state {' == '.join(digests)}: {'yes' if same else 'NO'}")
    print()
    p99 = max(p99s) if p99s else float("nan")
    rss_mb = max(rss_all) if rss_all else float("nan")
    noop_ratio = results["ours"].rate / stock if stock and "ours" in results else float("nan")
    print(
        f"ours/stock={ratio('ours', 'ours_stock'):.2f}"
        f" batch/stock={ratio('batch', 'batch_stock'):.2f}"
        f" ours_amqp/ours={ratio('ours_amqp', 'ours'):.2f}"
        f" batch_amqp/batch={ratio('batch_amqp', 'batch'):.2f}"
        f" ours/ceiling={ratios['ours/ceiling']:.2f} ours/naive={ratios['ours/naive']:.2f}"
        f" batch/ceiling={ratios['batch/ceiling']:.2f} batch/db={ratios['batch/db']:.2f}"
        f" p99_ms={p99:.0f} rss_mb={rss_mb:.0f}"
        f" batch/pg_limit={ratio('batch', 'pg_limit'):.2f}"
        f" cpu_ms_per_event={cpu if cpu is not None else float('nan'):.3f}"
        f" ours/stock_noop={noop_ratio:.2f}"
        f" ours_typed/ours={ratio('ours_typed', 'ours'):.2f}"
        f" batch_typed/batch={ratio('batch_typed', 'batch'):.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="deliveries (default 20000)")
    parser.add_argument("--modes", default=",".join(ALL_MODES), help="comma-separated subset")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-db", action="store_true", help="keep the databases at the end")
    parser.add_argument(
        "--broker",
        default="redis",
        help="the broker of the modes without a suffix: redis (a private redis-server, the "
        "default) or the URL of a Redis database or RabbitMQ virtual host the bench may empty",
    )
    parser.add_argument(
        "--amqp",
        default=AMQP_SERVER,
        help=f"the RabbitMQ server of the *_amqp modes (default {AMQP_SERVER}); a virtual "
        "host is made there for the run and deleted after it",
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(ALL_MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if uses_amqp(args.broker) and any(m.endswith("_stock") for m in modes):
        parser.error("the *_stock modes compare Redis transports: --broker must be Redis")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    global BROKER_URL
    folder = Path(tempfile.mkdtemp(prefix="bench_worker_servers_"))
    private: PrivateRedis | None = None
    rabbit: AmqpBroker | None = None
    clients: dict[str, Broker] = {}
    runner = Processes()
    results: dict[str, ModeResult] = {}
    digests: dict[str, str] = {}
    try:
        if args.broker == "redis":
            # As deployed (docker-compose.yml): an append-only file synced every second.
            private = PrivateRedis(folder, appendfsync="everysec")
            private.start()
            BROKER_URL = private.url
        else:
            BROKER_URL = args.broker
        clients[""] = clients["_stock"] = clients["_typed"] = Broker(BROKER_URL)
        if any(m.endswith("_amqp") for m in modes):
            rabbit = AmqpBroker(args.amqp, prefix="contact_sync_bench")
            rabbit.start()
            clients["_amqp"] = Broker(rabbit.url)
        print(
            f"broker {BROKER_URL}"
            + (f"; RabbitMQ virtual host {rabbit.vhost}" if rabbit is not None else ""),
            file=sys.stderr,
        )
        rng = random.Random(args.seed)
        contacts = build_template(rng)
        workload = generate(rng, contacts, args.events, "evt")
        for mode in modes:
            print(f"[{time.strftime('%H:%M:%S')}] {mode} ...", file=sys.stderr, flush=True)
            base, _, suffix = mode.partition("_")
            variant = f"_{suffix}" if suffix else ""
            client = clients[variant if base in ("ours", "batch") else ""]
            reset_database()
            client.flush()
            if variant == "_typed":
                define_typed_fields()
            if mode == "ceiling":
                results[mode] = run_ceiling(runner, client, workload)
            elif base in ("ours", "batch"):
                results[mode], digest = run_ours(
                    runner,
                    client,
                    workload,
                    contacts,
                    batch=base == "batch",
                    variant=variant,
                    latency_seconds=args.latency_seconds,
                    rng=rng,
                )
                if variant != "_typed":  # typed values are stored as their types
                    digests[mode] = digest
            elif mode == "naive":
                results[mode] = run_naive(runner, client, workload)
            elif mode == "pg_limit":
                results[mode] = run_pg_limit(workload)
            else:
                results[mode] = run_db(workload)
            load = os.getloadavg()[0]
            results[mode].note += f" [load {load:.1f}]"
            print(
                f"[{time.strftime('%H:%M:%S')}] {mode}: {results[mode].rate:,.0f} events/s",
                file=sys.stderr,
                flush=True,
            )
    except HarnessError as error:
        print(f"worker_throughput: {error}", file=sys.stderr)
        return 2
    finally:
        runner.stop_all()
        for client in {id(c): c for c in clients.values()}.values():
            if private is None:
                client.flush()  # a broker given with --broker: left empty
            client.close()
        if rabbit is not None:
            rabbit.stop()
        if private is not None:
            private.stop()
        shutil.rmtree(folder, ignore_errors=True)
        if not args.keep_db:
            drop_databases()
    print(f"(worker logs in {runner.logdir})", file=sys.stderr)
    report(results, digests, workload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
