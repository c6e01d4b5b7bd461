"""Fault injection: nothing lost, nothing applied twice, every contact as the oracle says.

Run from the repository root (issue 6, DESIGN §4-§6)::

    /work/venv/bin/python bench/chaos.py             # 5,000 events, 500 contacts, 5 teams
    /work/venv/bin/python bench/chaos.py --small     # 600 events, 60 contacts, 3 teams (< 2 min)
    /work/venv/bin/python bench/chaos.py --seed 7 --workers 3 --keep

It touches neither the machine's PostgreSQL nor its Redis: it starts a private PostgreSQL
cluster (``initdb`` into a temporary folder, ``pg_ctl start`` on a free port; as root through
``runuser -u postgres``) and a private ``redis-server`` on a free port with
``--appendonly yes --appendfsync always``, so queued messages survive a restart. Both are
stopped and deleted at the end, also on Ctrl-C (``--keep`` keeps the folder with every log).

What it does:

1. migrates the database and seeds teams and contacts through the package's services
   (``create_team``, ``create_contact``); one team lets calls overwrite people's values;
2. generates a known set of events: each delivered 1-3 times, shuffled, with times spread over
   two days (so many arrive older than an event of the same contact applied before them, some
   tie on ``occurred_at``), some naming the contact by its phone only, and some invalid (unknown
   or foreign contact, unknown team, ``schema_version`` 2, malformed, dated in the future,
   bodies Celery cannot decode, an unknown task name);
3. computes the oracle: per contact, the pure merge applied once per distinct valid event in time
   order to the contact as seeded;
4. starts ``--workers`` real ``contact-sync worker --concurrency 2`` processes under a supervisor
   that restarts any that dies (and kills what a dead one left behind, as a container runtime
   would), with ``CONTACT_SYNC_VISIBILITY_TIMEOUT_SECONDS=60`` so the messages of killed workers
   come back within the run;
5. publishes the deliveries over ``--publish-seconds`` (single-event messages with
   ``send_task``, batch messages through ``EventPublisher``, raw messages with ``LPUSH``; half
   evenly, half in a burst just before each fault), retrying a send the broker refused, and
   meanwhile injects faults at random moments, each once Redis shows messages taken and not yet
   acknowledged: SIGKILL of a busy worker's pool child and of a busy worker's main process, Redis
   killed (SIGKILL) and shut down (``SHUTDOWN``, AOF persisted) then restarted on the same
   folder, PostgreSQL connections terminated (``pg_terminate_backend``) and PostgreSQL
   restarted (``pg_ctl restart -m fast``), and a SIGTERM warm shutdown; after each it measures
   the recovery time (until the inbox grows again);
6. waits until the inbox holds every valid event, the dead letters every invalid one, and Redis
   holds no queued or unacknowledged message (or a timeout), then compares the database with the
   oracle and prints what it found.

The last line is ``published=N lost=L applied_twice=A differing=D`` (N: distinct events); the
exit code is 0 only when every count there is 0 and nothing else differs (a missing or wrong
dead letter, an event applied to the wrong contact, a contact that should not exist).
Exit code 2: the harness itself failed (a server did not start); 130: interrupted.

``--poison-max-attempts`` (default 1000) is high so that messages the harness killed are not
parked as ``poison_message``. A trigger on ``delivery_attempts`` (harness-only, in its private
database) keeps every count the worker writes, so the highest is printed, with how many
messages the default limit of 3 would have parked.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import glob
import json
import logging
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psycopg
import redis
from sqlalchemy import Engine, select

from contact_sync.apply import STATE_FIELDS
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.db.tables import (
    contact_history,
    contacts,
    dead_letters,
    processed_events,
)
from contact_sync.events import CallCompleted, parse_event
from contact_sync.merge import ContactState, MergePolicy, merge
from contact_sync.publisher import EventPublisher
from contact_sync.settings import Settings
from contact_sync.store import create_contact
from contact_sync.teams import Team, create_team
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, create_app

T = TypeVar("T")

VISIBILITY_TIMEOUT = 60  # the minimum the settings allow
DATABASE = "chaos"
FAULT_KINDS = (
    "kill_child",
    "kill_main",
    "redis_kill",
    "redis_shutdown",
    "pg_terminate",
    "pg_restart",
    "sigterm",
)


@dataclass(frozen=True)
class Size:
    """How big a run is."""

    events: int
    contacts: int
    teams: int
    publish_seconds: float
    finish_seconds: float  # after publishing, how long to wait for the last deliveries
    faults: tuple[str, ...]


FULL = Size(
    events=5000,
    contacts=500,
    teams=5,
    publish_seconds=60.0,
    finish_seconds=300.0,
    faults=("kill_child",) * 4
    + ("kill_main",) * 3
    + ("redis_kill", "redis_shutdown")
    + ("pg_terminate",) * 2
    + ("pg_restart",) * 2
    + ("sigterm",) * 2,
)
SMALL = Size(
    events=600,
    contacts=60,
    teams=3,
    publish_seconds=16.0,
    finish_seconds=80.0,
    faults=(
        "kill_main",
        "kill_child",
        "kill_child",
        "redis_kill",
        "redis_shutdown",
        "pg_terminate",
        "pg_restart",
        "sigterm",
    ),
)


class HarnessError(Exception):
    """The harness itself could not do its job (a server did not start, ...)."""


def log(message: str) -> None:
    print(message, flush=True)


def wait_until(what: str, probe: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_members(session_id: int) -> list[int]:
    """Pids of the processes in session ``session_id`` (the worker's and its children)."""
    members = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        rest = text[text.rfind(")") + 2 :].split()
        if len(rest) > 3 and int(rest[3]) == session_id:
            members.append(int(text.split(" ", 1)[0]))
    return members


def children_of(pid: int) -> list[int]:
    """Live children of ``pid`` (a child killed a moment ago lingers as a zombie: skipped)."""
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in Path(path).read_text().split()]
    live = []
    for child in found:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{child}/stat").read_text()
            if stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X"):
                live.append(child)
    return live


# --- private servers ---------------------------------------------------------------------


def _pg_bin() -> Path:
    preferred = Path("/usr/lib/postgresql/15/bin")
    if (preferred / "pg_ctl").exists():
        return preferred
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise HarnessError("PostgreSQL server binaries (pg_ctl, initdb) are not installed")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, in a folder of its own."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "postgres"
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self.port = free_port()
        self.bin = _pg_bin()
        self.initialised = False

    def _run(self, name: str, *args: str, timeout: float = 120) -> str:
        command = [str(self.bin / name), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode:
            raise HarnessError(
                f"{name} {' '.join(args[:3])} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )
        return result.stdout

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "90",
            "-o",
            options,
            *extra,
            action,
        )

    def start(self) -> None:
        self.dir.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.initialised = True
        self._pg_ctl("start")
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if self.initialised and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def terminate_connections(self) -> int:
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (DATABASE,),
            ).fetchone()
        return int(row[0]) if row else 0


class PrivateRedis:
    """A throwaway redis-server with an append-only file synced on every write."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "redis"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise HarnessError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            wait_until("redis to answer", lambda: self._pings(client), timeout=60)
        finally:
            client.close()

    def _pings(self, client: redis.Redis) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise HarnessError(f"redis-server exited ({self.process.returncode})")
        try:
            return bool(client.ping())
        except redis.RedisError:  # refused, or still loading the append-only file
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def shutdown(self) -> None:
        """``SHUTDOWN``: Redis fsyncs its append-only file and exits."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def stop(self) -> None:
        self.kill()


# --- workers and their supervisor -----------------------------------------------------------


@dataclass
class Incarnation:
    """One run of a worker slot's process."""

    slot: int
    number: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float
    ready: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    _scanned: int = 0

    def check_ready(self) -> bool:
        if self.ready is None:
            with contextlib.suppress(OSError), self.log_path.open("rb") as handle:
                handle.seek(max(0, self._scanned - 16))
                chunk = handle.read()
                self._scanned += len(chunk)
                if b' ready."' in chunk:
                    self.ready = time.monotonic()
        return self.ready is not None


class Workers:
    """``count`` worker slots; a supervisor thread restarts the process of any that dies."""

    def __init__(self, root: Path, env: dict[str, str], count: int, concurrency: int) -> None:
        self.root = root
        self.env = env
        self.count = count
        self.concurrency = concurrency
        self.slots: list[list[Incarnation]] = [[] for _ in range(count)]
        self.lock = threading.Lock()
        self.supervising = threading.Event()
        self.thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    def _spawn(self, slot: int) -> Incarnation:
        number = len(self.slots[slot])
        log_path = self.root / f"worker{slot}.{number}.log"
        command = [
            sys.executable, "-m", "contact_sync.cli", "worker",
            "--concurrency", str(self.concurrency), "--hostname", f"chaos{slot}.{number}@%h",
        ]  # fmt: skip
        with log_path.open("ab") as handle:  # a file, not a pipe nobody reads
            process = subprocess.Popen(
                command,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the harness only; it stops them
            )
        incarnation = Incarnation(slot, number, process, log_path, time.monotonic())
        self.slots[slot].append(incarnation)
        return incarnation

    def start(self) -> None:
        with self.lock:
            for slot in range(self.count):
                self._spawn(slot)
        self.supervising.set()
        self.thread.start()

    def current(self, slot: int) -> Incarnation:
        with self.lock:
            return self.slots[slot][-1]

    def all(self) -> list[Incarnation]:
        with self.lock:
            return [inc for slot in self.slots for inc in slot]

    def ready_slots(self) -> list[int]:
        return [
            slot
            for slot in range(self.count)
            if (inc := self.current(slot)).check_ready() and inc.process.poll() is None
        ]

    def wait_ready(self, timeout: float) -> None:
        wait_until(
            "the workers to be ready", lambda: len(self.ready_slots()) == self.count, timeout
        )

    def _supervise(self) -> None:
        while self.supervising.is_set():
            with self.lock:
                for slot in range(self.count):
                    incarnation = self.slots[slot][-1]
                    incarnation.check_ready()
                    code = incarnation.process.poll()
                    if code is None or not self.supervising.is_set():
                        continue
                    incarnation.ended = time.monotonic()
                    incarnation.exit_code = code
                    # What a dead main process left (its orphaned pool children) goes
                    # with it, as when a container dies.
                    for pid in session_members(incarnation.process.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    self._spawn(slot)
            time.sleep(0.1)

    def stop(self) -> None:
        """Warm shutdown of every worker, then SIGKILL whatever is left of them."""
        self.supervising.clear()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        for incarnation in self.all():
            if incarnation.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    incarnation.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for incarnation in self.all():
            with contextlib.suppress(subprocess.TimeoutExpired):
                incarnation.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for incarnation in self.all():
            for pid in session_members(incarnation.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                incarnation.process.wait(timeout=5)

    def log_records(self) -> Iterator[dict[str, Any]]:
        for incarnation in self.all():
            with incarnation.log_path.open("rb") as handle:
                for line in handle:
                    if line.startswith(b"{"):
                        with contextlib.suppress(ValueError):
                            yield json.loads(line)


# --- the data set -------------------------------------------------------------------------

JOB_TITLES = ["CTO", "Owner", "CFO", "Facilities manager", "Head of operations"]
EMAILS = ["a@example.com", "B.Person@Example.ORG", "c@example.net", "not-an-email"]
TIMEZONES = ["America/Chicago", "America/New_York", "Europe/Paris", "Mars/Olympus"]
METHODS = ["phone", "email", "sms"]
PRODUCTS = ["solar", "battery", "heat-pump", None]
TAGS = ["hot", "solar", "callback", "roof", "battery", "referral"]
STATUSES = [None, None, None, "qualified", "unqualified", "contacted", "Contacted"]
OUTCOMES = ["completed", "completed", "completed", "voicemail", "no_answer", "busy", "failed"]
INVALID_KINDS = [
    "unknown_contact",
    "foreign_contact",
    "unknown_team",
    "schema_version",
    "malformed",
    "future",
]


@dataclass
class Seeded:
    """A seeded contact: its row as stored, and how events may name it."""

    id: str
    team: Team
    phone: str | None
    row: Any


@dataclass
class DataSet:
    """The known events and what the database must hold in the end."""

    teams: list[Team]
    contacts: list[Seeded]
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)  # event_id -> payload
    target: dict[str, str] = field(default_factory=dict)  # valid event_id -> contact id
    invalid: dict[str, str] = field(default_factory=dict)  # event_id -> expected reason
    garbage: list[str] = field(default_factory=list)  # markers of undecodable bodies
    deliveries: list[tuple[str, Any]] = field(default_factory=list)  # (route, payload)

    @property
    def distinct(self) -> int:
        return len(self.valid) + len(self.invalid) + len(self.garbage)


def seed(engine: Engine, size: Size, rng: random.Random) -> tuple[list[Team], list[Seeded]]:
    teams: list[Team] = []
    people: list[Seeded] = []
    with engine.begin() as conn:
        for index in range(size.teams):
            # Team 0 lets calls overwrite people's values: both policies are exercised.
            teams.append(
                create_team(conn, name=f"Chaos team {index}", calls_overwrite_people=index == 0)
            )
        for index in range(size.contacts):
            team = teams[index % len(teams)]
            data: dict[str, Any] = {
                "first_name": f"Chaos{index}",
                "last_name": rng.choice(["Lovelace", "Hopper", "Noether", "Curie"]),
            }
            phone = None
            if rng.random() < 0.85:  # the same numbers recur in every team: isolation
                phone = f"+1202555{1000 + index // len(teams):04d}"
                data["phone"] = phone
            if rng.random() < 0.3:
                data["job_title"] = rng.choice(JOB_TITLES)
            if rng.random() < 0.2:
                data["email"] = f"chaos{index}@example.com"
            if rng.random() < 0.2:
                data["timezone"] = "America/Denver"
            if rng.random() < 0.1:
                data["custom_fields"] = {"budget": 10}
            if rng.random() < 0.1:
                data["tags"] = ["vip"]
            roll = rng.random()
            if roll < 0.05:
                data["lead_status"] = "customer"
            elif roll < 0.15:
                data["lead_status"] = "qualified"
            if rng.random() < 0.05:
                data["do_not_call"] = True
            contact = create_contact(conn, team_id=team.id, data=data)
            people.append(Seeded(contact.id, team, phone, None))
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(contacts))}
    for person in people:
        person.row = rows[person.id]
    return teams, people


def _national(e164: str) -> str:
    return f"({e164[2:5]}) {e164[5:8]}-{e164[8:]}"


def _when(rng: random.Random, base: datetime, minutes: int) -> str:
    at = base + timedelta(minutes=minutes, seconds=rng.choice([0, 0, 0, 17, 42.5]))
    roll = rng.random()
    if roll < 0.15:  # the same instant, written with another offset
        return at.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    if roll < 0.3:
        return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return at.isoformat()


def _extraction(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.1:
        return None
    contact: dict[str, Any] = {}
    if rng.random() < 0.5:
        contact["job_title"] = rng.choice(JOB_TITLES)
    if rng.random() < 0.3:
        contact["email"] = rng.choice(EMAILS)
    if rng.random() < 0.2:
        contact["timezone"] = rng.choice(TIMEZONES)
    if rng.random() < 0.15:  # never a number that phone resolution looks for
        contact["phone_secondary"] = _national(f"+1312555{rng.randrange(1000, 10000):04d}")
    if rng.random() < 0.1:
        contact["first_name"] = rng.choice(["Ada", "Grace", "Emmy"])
    if rng.random() < 0.1:
        contact["preferred_contact_method"] = rng.choice(METHODS)
    extraction: dict[str, Any] = {
        "extractor_version": "v3",
        "custom_fields": {
            "budget": {
                "value": rng.randrange(1000, 90000),
                "confidence": rng.choice([0.2, 0.7, 0.95]),
                "evidence": "about that much",
            },
            "product_interest": rng.choice(PRODUCTS),
        },
        "contact": contact,
        "tags": rng.sample(TAGS, k=rng.randrange(3)),
        "summary": "Talked about the roof.",
    }
    if rng.random() < 0.3:
        extraction["custom_fields"]["callback_day"] = rng.choice(["monday", "friday", None])
    status = rng.choice(STATUSES) if rng.random() > 0.01 else "Do Not Contact"
    if status is not None:
        extraction["lead_status"] = status
    if rng.random() < 0.03:
        extraction["do_not_call"] = True
    elif rng.random() < 0.05:
        extraction["do_not_call"] = False
    return extraction


def _invalid(
    rng: random.Random, kind: str, person: Seeded, others: list[Seeded], event: dict[str, Any]
) -> str:
    """Spoil ``event`` in place as ``kind`` says; returns the expected dead-letter reason."""
    if kind == "unknown_contact":
        event["contact_id"] = f"ct_missing_{uuid.uuid4().hex[:12]}"
        return "contact_not_found"
    if kind == "foreign_contact":
        event["contact_id"] = rng.choice([o for o in others if o.team.id != person.team.id]).id
        event.pop("phone", None)
        return "contact_not_found"
    if kind == "unknown_team":
        event["team_id"] = f"team_nope_{uuid.uuid4().hex[:8]}"
        return "contact_not_found"
    if kind == "schema_version":
        event["schema_version"] = 2
        return "unsupported_schema_version"
    if kind == "future":
        event["occurred_at"] = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
        return "occurred_in_future"
    spoil = rng.choice(["no_call_id", "bad_outcome", "naive_time", "tags_not_a_list"])
    if spoil == "no_call_id":
        del event["call_id"]
    elif spoil == "bad_outcome":
        event["outcome"] = "exploded"
    elif spoil == "naive_time":
        event["occurred_at"] = "2025-01-01T10:00:00"
    else:
        event["extraction"] = {"tags": "hot"}
    return "invalid_payload"


def _envelope(body: bytes, task: str) -> str:
    """A Celery protocol-2 message as docs/celery-message.md shows it."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": task, "id": str(uuid.uuid4())},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "delivery_mode": 2,
                "priority": 0,
            },
        }
    )


def generate(teams: list[Team], people: list[Seeded], size: Size, rng: random.Random) -> DataSet:
    data = DataSet(teams, people)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    times: dict[str, list[int]] = defaultdict(list)
    n_invalid = max(len(INVALID_KINDS), size.events // 25)
    n_garbage = max(2, size.events // 500)
    n_valid = size.events - n_invalid - n_garbage
    events: list[dict[str, Any]] = []
    for index in range(n_valid + n_invalid):
        person = rng.choice(people)
        if times[person.id] and rng.random() < 0.05:
            minutes = rng.choice(times[person.id])  # a tie: the event id decides
        else:
            minutes = rng.randrange(0, 2 * 24 * 60)
        times[person.id].append(minutes)
        event: dict[str, Any] = {
            "event_id": f"evt_{uuid.uuid4().hex[:10]}_{index:05d}",
            "type": "call.completed",
            "schema_version": 1,
            "team_id": person.team.id,
            "call_id": f"call_{uuid.uuid4().hex[:12]}",
            "occurred_at": _when(rng, base, minutes),
            "outcome": rng.choice(OUTCOMES),
        }
        if person.phone is not None and rng.random() < 0.2:
            event["phone"] = _national(person.phone) if rng.random() < 0.5 else person.phone
        else:
            event["contact_id"] = person.id
        if rng.random() < 0.3:
            event["campaign_id"] = f"cmp_{rng.randrange(5)}"
        if rng.random() < 0.5:
            event["duration_seconds"] = rng.randrange(0, 900)
        extraction = _extraction(rng)
        if extraction is not None:
            event["extraction"] = extraction
        if index >= n_valid:
            kind = INVALID_KINDS[index % len(INVALID_KINDS)]
            data.invalid[event["event_id"]] = _invalid(rng, kind, person, people, event)
        else:
            data.valid[event["event_id"]] = event
            data.target[event["event_id"]] = person.id
        events.append(event)
    # Messages the consumer itself must park: a body that is not JSON, an unknown task.
    raw: list[str] = []
    for index in range(n_garbage):
        if index % 2 == 0:
            marker = f"chaos-garbage-{uuid.uuid4().hex[:8]}"
            data.garbage.append(marker)
            raw.append(_envelope(f"{{{marker} is not json".encode(), TASK_APPLY))
        else:
            event = {"event_id": f"evt_unknown_task_{uuid.uuid4().hex[:8]}", "note": "chaos"}
            data.invalid[event["event_id"]] = "invalid_payload"
            body = [[event], {}, {"callbacks": None, "errbacks": None, "chain": None}]
            raw.append(_envelope(json.dumps(body).encode(), "contact_sync.no_such_task"))
    now = datetime.now(UTC)
    for event_id, payload in data.valid.items():
        parse_event(payload, now=now)  # the oracle's premise: these are valid
        assert event_id == payload["event_id"]
    for event in events:
        route = "single" if rng.random() < 0.35 else "batch"
        data.deliveries += [(route, event)] * rng.choices([1, 2, 3], weights=[5, 3, 2])[0]
    for envelope in raw:
        data.deliveries += [("raw", envelope)] * rng.choice([1, 2])
    rng.shuffle(data.deliveries)
    return data


def oracle(data: DataSet, min_confidence: float) -> dict[str, dict[str, Any]]:
    """Per contact: the pure merge of each distinct valid event once, in time order."""
    now = datetime.now(UTC)
    mine: dict[str, list[CallCompleted]] = defaultdict(list)
    for event_id, payload in data.valid.items():
        mine[data.target[event_id]].append(parse_event(payload, now=now))
    names = [f.name for f in fields(ContactState)]
    expected: dict[str, dict[str, Any]] = {}
    for person in data.contacts:
        team = person.team
        policy = MergePolicy(
            region=team.default_region,
            min_confidence=team.min_confidence
            if team.min_confidence is not None
            else min_confidence,
            calls_overwrite_people=team.calls_overwrite_people,
        )
        state = ContactState(**{name: copy.deepcopy(getattr(person.row, name)) for name in names})
        for event in sorted(mine[person.id], key=lambda e: (e.occurred_at, e.event_id)):
            state = merge(state, event, policy).state
        expected[person.id] = {name: getattr(state, name) for name in STATE_FIELDS}
    return expected


# --- watching the inbox ----------------------------------------------------------------------


class InboxMonitor:
    """Samples the inbox count, for recovery times."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.samples: list[tuple[float, int]] = []
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._run, name="inbox-monitor", daemon=True)

    def start(self) -> None:
        self.running.set()
        self.thread.start()

    def stop(self) -> None:
        self.running.clear()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while self.running.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                row = conn.execute("SELECT count(*) FROM processed_events").fetchone()
                self.samples.append((time.monotonic(), int(row[0]) if row else 0))
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
            time.sleep(0.1)
        if conn is not None:
            conn.close()

    def count_at(self, moment: float) -> int | None:
        before = [count for at, count in self.samples if at <= moment]
        return before[-1] if before else None

    def growth_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` until the inbox count exceeded its value then."""
        base = self.count_at(moment)
        if base is None:
            return None
        for at, count in self.samples:
            if at > moment and count > base:
                return at - moment
        return None


# --- publishing -----------------------------------------------------------------------------


class Publishing:
    """Sends each delivery at its time; a send the broker refused is retried."""

    def __init__(self, app: Any, redis_url: str, data: DataSet, timeline: list[float]) -> None:
        self.app = app
        self.redis_url = redis_url
        self.data = data
        self.timeline = timeline  # per delivery: when to send it (seconds after the start)
        self.started = 0.0
        self.single_messages = 0
        self.raw_messages = 0
        self.batch_events = 0  # sent by the EventPublisher
        self.batch_handed = 0  # handed to it
        self.batch_messages = 0
        self.refusals: Counter[str] = Counter()
        self.sent_at: dict[int, float] = {}  # delivery index -> wall-clock time handed over
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self, started: float) -> None:
        self.started = started
        self.thread.start()

    def _retry(self, action: Callable[[], T]) -> T:
        deadline = time.monotonic() + 120
        while True:
            try:
                return action()
            except Exception as error:  # kombu and redis-py raise many kinds
                self.refusals[type(error).__name__] += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _run(self) -> None:
        try:
            self._publish()
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()

    def _publish(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
        publisher = EventPublisher(
            app=self.app, max_batch=100, linger_seconds=0.05, validate_events=False
        )
        deliveries = self.data.deliveries
        for index in sorted(range(len(deliveries)), key=lambda i: self.timeline[i]):
            time.sleep(max(0.0, self.started + self.timeline[index] - time.monotonic()))
            route, payload = deliveries[index]
            self.sent_at[index] = time.time()
            if route == "single":
                self._retry(partial(self.app.send_task, TASK_APPLY, args=[payload], queue=QUEUE))
                self.single_messages += 1
            elif route == "raw":
                self._retry(partial(client.lpush, QUEUE, payload))
                self.raw_messages += 1
            else:
                self.batch_handed += 1
                try:
                    # Buffers the event, and sends a batch when it holds 100.
                    publisher.publish(payload)
                except Exception as error:
                    # The broker refused the batch: the event is in the buffer (it
                    # must not be lost there); send it again, do not publish it twice.
                    self.refusals[type(error).__name__] += 1
                    self._retry(publisher.flush)
        self._retry(publisher.flush)
        self._retry(publisher.close)
        self.batch_events = publisher.events_sent
        self.batch_messages = publisher.messages_sent
        client.close()


# --- faults -------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault and what followed it."""

    kind: str
    at: float  # when it was injected
    done: float = 0.0  # when the injection finished (the server back, the process gone)
    detail: str = ""
    slot: int | None = None
    incarnation: int | None = None
    recovery: float | None = None
    replaced_after: float | None = None
    wall_done: float = 0.0  # time.time() when done


class Injector:
    def __init__(
        self, rng: random.Random, workers: Workers, pg: PrivatePostgres, rds: PrivateRedis
    ) -> None:
        self.rng = rng
        self.workers = workers
        self.pg = pg
        self.redis = rds

    def _busy_worker(self) -> Incarnation:
        """A ready worker that is applying events now (its log was written just now)."""

        def busy() -> list[int]:
            now = time.time()
            return [
                slot
                for slot in self.workers.ready_slots()
                if now - self.workers.current(slot).log_path.stat().st_mtime < 0.3
            ]

        try:
            slots = wait_until("a busy worker", busy, timeout=10, interval=0.02)
        except HarnessError:
            slots = wait_until("a ready worker", self.workers.ready_slots, timeout=60)
        return self.workers.current(self.rng.choice(slots))

    def _unacked(self) -> str:
        client = redis.Redis(port=self.redis.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            return str(client.hlen("unacked"))
        except redis.RedisError:
            return "?"
        finally:
            client.close()

    def _wait_in_flight(self) -> None:
        """Strike while messages are taken and unacknowledged (up to 3 s of waiting)."""
        client = redis.Redis(port=self.redis.port, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + 3
        try:
            while time.monotonic() < deadline and not client.hlen("unacked"):
                time.sleep(0.005)
        except redis.RedisError:
            pass
        finally:
            client.close()

    def inject(self, kind: str, started: float) -> Fault:
        self._wait_in_flight()
        fault = Fault(kind, time.monotonic())
        if kind in ("kill_child", "kill_main", "sigterm"):
            target = self._busy_worker()
            fault.slot, fault.incarnation = target.slot, target.number
            main = target.process.pid
            unacked = self._unacked()
            if kind == "kill_child":
                pool = wait_until("the pool children", lambda: children_of(main), timeout=10)
                child = self.rng.choice(pool)
                os.kill(child, signal.SIGKILL)
                fault.detail = (
                    f"worker {target.slot}.{target.number}: pool child {child} "
                    f"({unacked} messages unacknowledged in Redis)"
                )
            elif kind == "kill_main":
                os.kill(main, signal.SIGKILL)
                fault.detail = (
                    f"worker {target.slot}.{target.number}: main process {main} "
                    f"({unacked} messages unacknowledged in Redis)"
                )
            else:
                target.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    target.process.wait(timeout=60)
                fault.detail = (
                    f"worker {target.slot}.{target.number} ({unacked} messages unacknowledged "
                    "in Redis): warm shutdown took "
                    f"{time.monotonic() - fault.at:.1f} s (exit {target.process.returncode})"
                )
        elif kind == "redis_kill":
            self.redis.kill()
            time.sleep(self.rng.uniform(0.3, 1.5))
            self.redis.start()
            fault.detail = f"SIGKILL, restarted: down {time.monotonic() - fault.at:.1f} s"
        elif kind == "redis_shutdown":
            self.redis.shutdown()
            time.sleep(self.rng.uniform(0.3, 1.5))
            self.redis.start()
            fault.detail = f"SHUTDOWN, restarted: down {time.monotonic() - fault.at:.1f} s"
        elif kind == "pg_terminate":
            fault.detail = f"{self.pg.terminate_connections()} connections terminated"
        elif kind == "pg_restart":
            self.pg.restart()
            fault.detail = f"pg_ctl restart -m fast took {time.monotonic() - fault.at:.1f} s"
        else:
            raise HarnessError(f"unknown fault {kind}")
        fault.done = time.monotonic()
        fault.wall_done = time.time()
        wall = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        log(f"  +{fault.at - started:5.1f}s  {kind:<15} {fault.detail} (done {wall})")
        return fault


def schedule(
    size: Size, rng: random.Random, seconds: float, deliveries: int
) -> tuple[list[tuple[float, str]], list[float]]:
    """When each fault strikes, and when each delivery is sent (seconds after the start).

    Half the deliveries trickle evenly over the window; the other half come in a burst
    shortly before each fault, so that every fault finds messages queued and in flight.
    Main-process kills come in the first half of the window, so the messages they strand
    come back (after the visibility timeout) within the run.
    """
    kinds = list(size.faults)
    rng.shuffle(kinds)
    mains = [k for k in kinds if k == "kill_main"]
    others = [k for k in kinds if k != "kill_main"]
    slots = len(kinds)
    early = set(rng.sample(range(max(len(mains), slots // 2)), len(mains)))
    order = ["kill_main" if index in early else others.pop() for index in range(slots)]
    gap = seconds * 0.85 / slots
    faults = [
        (0.08 * seconds + i * gap + rng.uniform(0, gap * 0.4), kind) for i, kind in enumerate(order)
    ]
    timeline = [seconds * index / deliveries for index in range(deliveries)]
    bursty = rng.sample(range(deliveries), deliveries // 2)
    for number, index in enumerate(bursty):
        at, _ = faults[number % slots]
        timeline[index] = max(0.0, at - rng.uniform(0.1, 0.5))
    return faults, timeline


# --- the verdict ----------------------------------------------------------------------------


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    applied_twice: list[str] = field(default_factory=list)
    version_gaps: list[str] = field(default_factory=list)
    differing: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    misrouted: list[str] = field(default_factory=list)
    phantom_contacts: int = 0
    publisher_dropped: int = 0
    lost_how: dict[str, list[str]] = field(default_factory=dict)
    invalid_applied: list[str] = field(default_factory=list)
    letters_missing: list[str] = field(default_factory=list)
    letters_wrong_reason: list[str] = field(default_factory=list)
    letters_duplicated: list[str] = field(default_factory=list)
    poison_parked: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def applied_twice_count(self) -> int:
        return len(self.applied_twice) + len(self.version_gaps)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.applied_twice_count
            or self.differing
            or self.misrouted
            or self.phantom_contacts
            or self.publisher_dropped
            or self.invalid_applied
            or self.letters_missing
            or self.letters_wrong_reason
        )


def explain_lost(
    lost: list[str], data: DataSet, publishing: Publishing, faults: list[Fault]
) -> dict[str, list[str]]:
    """Per lost event: each delivery's route and send time, and the fault nearest to it."""
    how: dict[str, list[str]] = defaultdict(list)
    wanted = set(lost)
    for index, (route, payload) in enumerate(data.deliveries):
        if not isinstance(payload, dict) or payload.get("event_id") not in wanted:
            continue
        sent = publishing.sent_at.get(index, 0.0)
        note = f"{route} sent {datetime.fromtimestamp(sent, UTC).strftime('%H:%M:%S.%f')[:-3]}"
        if faults:  # the fault nearest in time (a batch leaves the publisher ~50 ms later)
            near = min(faults, key=lambda f: abs(sent - f.wall_done))
            gap = (sent - near.wall_done) * 1000
            when = f"{gap:.0f} ms after" if gap >= 0 else f"{-gap:.0f} ms before"
            note += f", {when} {near.kind} ({near.detail})"
        how[payload["event_id"]].append(note)
    return dict(how)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def judge(engine: Engine, data: DataSet, expected: dict[str, dict[str, Any]]) -> Verdict:
    verdict = Verdict()
    with engine.connect() as conn:
        inbox = {row.event_id: row for row in conn.execute(select(processed_events))}
        history = list(conn.execute(select(contact_history)))
        letters = list(conn.execute(select(dead_letters)))
        rows = {row.id: row for row in conn.execute(select(contacts))}
    verdict.outcomes = Counter(row.outcome for row in inbox.values())
    records: dict[str | None, list[Any]] = defaultdict(list)
    per_contact: dict[str, list[Any]] = defaultdict(list)
    for record in history:
        records[record.event_id].append(record)
        per_contact[record.contact_id].append(record)
    letters_of: dict[str | None, list[Any]] = defaultdict(list)
    for letter in letters:
        letters_of[letter.event_id].append(letter)
        verdict.reasons[letter.reason] += 1
    for event_id, contact_id in data.target.items():
        row = inbox.get(event_id)
        mine = records.get(event_id, [])
        if row is None or row.outcome not in ("applied", "no_change") or not mine:
            verdict.lost.append(event_id)
            if any(letter.reason == "poison_message" for letter in letters_of.get(event_id, [])):
                verdict.poison_parked.append(event_id)
        if len(mine) > 1:
            verdict.applied_twice.append(event_id)
        if (row is not None and row.contact_id not in (None, contact_id)) or any(
            r.contact_id != contact_id for r in mine
        ):
            verdict.misrouted.append(event_id)
    for event_id, reason in data.invalid.items():
        found = letters_of.get(event_id, [])
        if not found:
            verdict.letters_missing.append(event_id)
        elif any(letter.reason != reason for letter in found):
            verdict.letters_wrong_reason.append(
                f"{event_id}: expected {reason}, got {sorted({x.reason for x in found})}"
            )
        if len(found) > 1:
            verdict.letters_duplicated.append(event_id)
        if records.get(event_id):
            verdict.invalid_applied.append(event_id)
    anonymous = " ".join(json.dumps(letter.payload) for letter in letters_of.get(None, []))
    verdict.letters_missing += [marker for marker in data.garbage if marker not in anonymous]
    seeded = {person.id for person in data.contacts}
    verdict.phantom_contacts = len(set(rows) - seeded)
    for person in data.contacts:
        row = rows[person.id]
        actual = {name: getattr(row, name) for name in STATE_FIELDS}
        want = expected[person.id]
        diff = {
            name: (actual[name], want[name])
            for name in STATE_FIELDS
            if _jsonable(actual[name]) != _jsonable(want[name])
        }
        if diff:
            verdict.differing[person.id] = diff
        mine = per_contact.get(person.id, [])
        changing = [
            r for r in mine if r.version_before is None or r.version_after != r.version_before
        ]
        steps_ok = all(
            r.version_before is None or r.version_after == r.version_before + 1 for r in changing
        ) and all(r.version_after == r.version_before for r in mine if r not in changing)
        if not steps_ok or sorted(r.version_after for r in changing) != list(
            range(1, row.version + 1)
        ):
            verdict.version_gaps.append(person.id)
    return verdict


def instrument(engine: Engine) -> None:
    """Keep every delivery count the worker writes (it deletes a count once its message
    finishes, too soon for polling): a harness-only table filled by a trigger."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE chaos_attempts_seen (message_key text, attempts int,"
            " seen_at timestamptz DEFAULT clock_timestamp())"
        )
        conn.exec_driver_sql(
            "CREATE FUNCTION chaos_note_attempt() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN INSERT INTO chaos_attempts_seen (message_key, attempts)"
            " VALUES (NEW.message_key, NEW.attempts); RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER chaos_note_attempt AFTER INSERT OR UPDATE ON delivery_attempts"
            " FOR EACH ROW EXECUTE FUNCTION chaos_note_attempt()"
        )


def attempts_seen(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            key: int(attempts)
            for key, attempts in conn.exec_driver_sql(
                "SELECT message_key, max(attempts) FROM chaos_attempts_seen GROUP BY message_key"
            )
        }


# --- the run --------------------------------------------------------------------------------


def _worker_env(pg: PrivatePostgres, rds: PrivateRedis, poison_max: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    env.update(
        CONTACT_SYNC_DATABASE_URL=pg.url,
        CONTACT_SYNC_BROKER_URL=rds.url,
        CONTACT_SYNC_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        CONTACT_SYNC_POISON_MAX_ATTEMPTS=str(poison_max),
        PYTHONUNBUFFERED="1",
    )
    return env


def _settled(engine: Engine, data: DataSet, rds: PrivateRedis) -> tuple[bool, int, str]:
    """Whether every event has its outcome and Redis holds nothing more; and what is missing."""
    try:
        with engine.connect() as conn:
            done = {
                row.event_id
                for row in conn.execute(
                    select(processed_events.c.event_id).where(
                        processed_events.c.outcome.in_(["applied", "no_change"])
                    )
                )
            }
            letters = list(conn.execute(select(dead_letters.c.event_id, dead_letters.c.payload)))
    except Exception as error:  # the database may be restarting
        return False, -1, f"database: {type(error).__name__}"
    missing = len(set(data.valid) - done)
    unparked = len(set(data.invalid) - {row.event_id for row in letters})
    anonymous = " ".join(json.dumps(row.payload) for row in letters if row.event_id is None)
    unparked += sum(marker not in anonymous for marker in data.garbage)
    client = redis.Redis(port=rds.port, socket_timeout=5, socket_connect_timeout=5)
    try:
        queued, unacked = int(client.llen(QUEUE)), int(client.hlen("unacked"))
    except redis.RedisError as error:
        return False, missing, f"redis: {type(error).__name__}"
    finally:
        client.close()
    state = (
        f"{missing} valid events without outcome, {unparked} invalid without dead letter, "
        f"{queued} queued, {unacked} unacknowledged"
    )
    return (missing == 0 and unparked == 0 and queued == 0 and unacked == 0), missing, state


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    size = SMALL if args.small else FULL
    if args.events:
        size = Size(args.events, args.contacts or size.contacts, args.teams or size.teams,
                    size.publish_seconds, size.finish_seconds, size.faults)  # fmt: skip
    publish_seconds = args.publish_seconds or size.publish_seconds
    seed_value = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed_value)
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="contact-sync-chaos-"))
    root.chmod(0o755)  # the postgres user must reach its folder inside
    pg, rds = PrivatePostgres(root), PrivateRedis(root)
    workers: Workers | None = None
    monitor: InboxMonitor | None = None
    engine: Engine | None = None
    app: Any = None
    refused: list[str] = []
    threading.excepthook = lambda hook: refused.append(
        f"{hook.thread.name if hook.thread else '?'}: {hook.exc_type.__name__}: {hook.exc_value}"
    )
    log(f"chaos: seed {seed_value}, folder {root}")
    try:
        pg.start()
        rds.start()
        log(f"  private PostgreSQL on port {pg.port}, Redis (AOF, fsync always) on {rds.port}")
        engine = make_engine(pg.url)
        upgrade(engine)
        instrument(engine)
        teams, people = seed(engine, size, rng)
        data = generate(teams, people, size, rng)
        # The workers' environment has no CONTACT_SYNC_MIN_CONFIDENCE: the default applies.
        expected = oracle(data, Settings.model_fields["min_confidence"].default)
        log(
            f"  {data.distinct} distinct events ({len(data.valid)} valid, "
            f"{len(data.invalid) + len(data.garbage)} invalid) over {len(people)} contacts in "
            f"{len(teams)} teams; {len(data.deliveries)} deliveries"
        )
        workers = Workers(root, _worker_env(pg, rds, args.poison_max_attempts), args.workers, 2)
        workers.start()
        workers.wait_ready(timeout=90)
        monitor = InboxMonitor(pg.dsn())
        monitor.start()
        app = create_app(Settings(broker_url=rds.url, database_url=pg.url))
        plan, timeline = schedule(size, rng, publish_seconds, len(data.deliveries))
        publishing = Publishing(app, rds.url, data, timeline)
        injector = Injector(rng, workers, pg, rds)
        log(
            f"  publishing over {publish_seconds:.0f} s (half evenly, half in a burst before "
            f"each fault) with {args.workers} workers; faults:"
        )
        started = time.monotonic()
        publishing.start(started)
        faults: list[Fault] = []
        for offset, kind in plan:
            time.sleep(max(0.0, started + offset - time.monotonic()))
            faults.append(injector.inject(kind, started))
        publishing.done.wait()
        if publishing.error is not None:
            raise HarnessError(f"publishing failed: {publishing.error!r}")
        log(f"  published in {time.monotonic() - started:.1f} s; waiting for the last deliveries")
        deadline = time.monotonic() + size.finish_seconds
        state, all_applied, settled = "", None, False
        while time.monotonic() < deadline:
            settled, missing, state = _settled(engine, data, rds)
            if missing == 0 and all_applied is None:
                all_applied = time.monotonic() - started
            if settled:
                time.sleep(0.2)  # a message is briefly in neither list nor hash: look again
                settled, missing, state = _settled(engine, data, rds)
                if settled:
                    break
            time.sleep(0.5)
        else:
            log(f"  timed out after {size.finish_seconds:.0f} s: {state}")
            settled = False
        settle_time = time.monotonic() - started
        applied_text = f"+{all_applied:.1f} s" if all_applied is not None else "never"
        drained_text = f"at +{settle_time:.1f} s" if settled else "never"
        log(
            f"  every valid event applied at {applied_text}, "
            f"queue and unacknowledged empty {drained_text}"
        )
        monitor.stop()
        workers.stop()
        verdict = judge(engine, data, expected)
        verdict.publisher_dropped = publishing.batch_handed - publishing.batch_events
        verdict.lost_how = explain_lost(verdict.lost, data, publishing, faults)
        if verdict.lost:
            (root / "lost.json").write_text(json.dumps(verdict.lost_how, indent=1))
        report(args, engine, data, publishing, workers, monitor, faults, verdict, refused)
        log(
            f"  total {time.monotonic() - began:.0f} s (publish + settle {settle_time:.0f} s); "
            f"{'PASS' if verdict.ok else 'FAIL'}"
        )
        print(
            f"published={data.distinct} lost={len(verdict.lost)} "
            f"applied_twice={verdict.applied_twice_count} differing={len(verdict.differing)}",
            flush=True,
        )
        return 0 if verdict.ok else 1
    finally:
        if monitor is not None:
            monitor.stop()
        if workers is not None:
            workers.stop()
        if app is not None:
            with contextlib.suppress(Exception):
                app.close()
        if engine is not None:
            engine.dispose()
        rds.stop()
        pg.stop()
        if args.keep:
            log(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(
    args: argparse.Namespace,
    engine: Engine,
    data: DataSet,
    publishing: Publishing,
    workers: Workers,
    monitor: InboxMonitor,
    faults: list[Fault],
    verdict: Verdict,
    refused: list[str],
) -> None:
    logged = Counter(
        r["outcome"] for r in workers.log_records() if "outcome" in r and r.get("event_id")
    )
    retries = sum(
        1 for r in workers.log_records() if r.get("message") == "transient error, retrying"
    )
    errors = sum(1 for r in workers.log_records() if r.get("level") in ("error", "critical"))
    crashes = sum(
        1 for r in workers.log_records() if str(r.get("message", "")).startswith("Unrecoverable")
    )
    taken_back = sum(
        int(r.get("messages", 0))
        for r in workers.log_records()
        if r.get("message") == "messages a dead consumer had taken went back to the queue"
    )
    messages = publishing.single_messages + publishing.batch_messages + publishing.raw_messages
    log("results:")
    log(
        f"  published: {data.distinct} distinct events, {len(data.deliveries)} deliveries in "
        f"{messages} messages ({publishing.single_messages} single, "
        f"{publishing.batch_messages} batches of {publishing.batch_events} events, "
        f"{publishing.raw_messages} raw); sends refused by the broker and retried: "
        f"{dict(publishing.refusals) or 0}"
    )
    log(
        f"  inbox: {verdict.outcomes['applied']} applied, {verdict.outcomes['no_change']} "
        f"no change, {verdict.outcomes['dead_lettered']} dead-lettered; worker log: "
        f"{dict(logged)} (duplicates absorbed: {logged['duplicate']}); transient retries "
        f"{retries}; error lines {errors}; workers that stopped on an unrecoverable error "
        f"{crashes}; messages taken back from dead consumers' transit lists {taken_back}"
    )
    log(f"  dead letters by reason: {dict(sorted(verdict.reasons.items()))}")
    if verdict.letters_duplicated:
        log(
            f"  note: {len(verdict.letters_duplicated)} invalid events have more than one open "
            f"dead letter (e.g. {verdict.letters_duplicated[:3]})"
        )
    seen = attempts_seen(engine)
    worst = max(seen.values(), default=0)
    over = sum(1 for v in seen.values() if v > 3)
    log(
        f"  redelivered messages counted (delivery_attempts): {len(seen)}, "
        f"highest count {worst}; {over} would have been parked as poison_message with the "
        f"default CONTACT_SYNC_POISON_MAX_ATTEMPTS=3 (this run: {args.poison_max_attempts})"
    )
    if refused:
        log(f"  exceptions in background threads: {len(refused)}, e.g. {refused[:2]}")
    log("faults (recovery: until the inbox grew again after the fault ended):")
    incarnations = {(i.slot, i.number): i for i in workers.all()}
    for fault in faults:
        recovery = monitor.growth_after(fault.done)
        text = f"{recovery:.1f} s" if recovery is not None else "no growth seen"
        extra = ""
        if fault.kind in ("kill_main", "sigterm") and fault.slot is not None:
            successor = incarnations.get((fault.slot, (fault.incarnation or 0) + 1))
            if successor is not None and successor.ready is not None:
                extra = f"; replacement worker ready {successor.ready - fault.at:.1f} s after"
        log(f"  {fault.kind:<15} {fault.detail}: recovery {text}{extra}")
    log("verdict:")
    log(f"  lost: {len(verdict.lost)}")
    for event_id in verdict.lost[:10]:
        log(f"    {event_id}: {'; '.join(verdict.lost_how.get(event_id, []))}")
    if verdict.poison_parked:
        log(f"    of which parked as poison_message: {len(verdict.poison_parked)}")
    log(
        f"  applied twice: {len(verdict.applied_twice)} events with several history records "
        f"{verdict.applied_twice[:5]}, {len(verdict.version_gaps)} contacts with version gaps "
        f"{verdict.version_gaps[:5]}"
    )
    log(f"  contacts differing from the oracle: {len(verdict.differing)} of {len(data.contacts)}")
    for contact_id, diff in list(verdict.differing.items())[:5]:
        log(f"    {contact_id}: {diff}")
    for name, items in (
        ("events applied to the wrong contact", verdict.misrouted),
        ("invalid events applied", verdict.invalid_applied),
        ("invalid events without dead letter", verdict.letters_missing),
        ("dead letters with the wrong reason", verdict.letters_wrong_reason),
    ):
        if items:
            log(f"  {name}: {len(items)} {items[:5]}")
    if verdict.publisher_dropped:
        log(
            f"  events the EventPublisher took but never sent: {verdict.publisher_dropped} "
            f"(of {publishing.batch_handed})"
        )
    if verdict.phantom_contacts:
        log(f"  contacts that should not exist: {verdict.phantom_contacts}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--small", action="store_true", help="600 events; under two minutes")
    parser.add_argument("--seed", type=int, help="the data set's seed (default: random)")
    parser.add_argument("--events", type=int, help="distinct events (overrides the size)")
    parser.add_argument("--contacts", type=int)
    parser.add_argument("--teams", type=int)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2 children each)")
    parser.add_argument("--publish-seconds", type=float, help="how long publishing takes")
    parser.add_argument("--poison-max-attempts", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the folder with every log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(name)s: %(message)s")
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except HarnessError as error:
        print(f"chaos: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("chaos: interrupted; servers stopped and deleted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
