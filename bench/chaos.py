"""Fault injection: nothing lost, nothing applied twice, every contact as the oracle says.

Run from the repository root (issue 6, docs/design.md §4–§6)::

    python bench/chaos.py             # 5,000 events, 500 contacts, 5 teams, on Redis
    python bench/chaos.py --small     # 600 events, 60 contacts, 3 teams (< 2 min)
    python bench/chaos.py --small --broker amqp://guest:guest@127.0.0.1:5672/
    python bench/chaos.py --seed 7 --workers 3 --keep

It touches neither the machine's PostgreSQL nor its broker's data: it starts a private
PostgreSQL cluster (``initdb`` into a temporary folder, ``pg_ctl start`` on a free port; as root
through ``runuser -u postgres``) and, with ``--broker redis`` (the default), a private
``redis-server`` on a free port with ``--appendonly yes --appendfsync always``, so queued
messages survive a restart. With ``--broker amqp://user:pass@host:port/`` it uses that RabbitMQ
server in a virtual host of its own (``rabbitmqctl add_vhost``; the URL's own virtual host is
not used), where the workers declare the project's quorum queue. Everything is stopped and
deleted at the end, also on Ctrl-C (``--keep`` keeps the folder with every log).

What it does:

1. migrates the database and seeds teams and contacts through the package's services
   (``create_team``, ``create_contact``); one team lets calls overwrite people's values;
2. generates a known set of events: each delivered 1-3 times, shuffled, with times spread over
   two days (so many arrive older than an event of the same contact applied before them, some
   tie on ``occurred_at``), some naming the contact by its phone only, and some invalid (unknown
   or foreign contact, unknown team, ``schema_version`` 2, malformed, dated in the future,
   bodies Celery cannot decode, an unknown task name); and malformed raw entries, each sent
   once: on Redis, bytes that are no message at all pushed on the list (not JSON, ``{}``,
   ``[]``, a JSON string, an envelope without ``properties`` or ``body``, bad base64, a few KB
   of random bytes); on RabbitMQ, messages whose headers and body no worker can use (no task
   header, no headers, a body that is not JSON, another content type, pickle, a body of the
   wrong shape, a task name that is not a string). Each must become exactly one dead letter
   ``invalid_payload`` that keeps its text (a second one is counted apart, and passes only
   after a fault that can return a parked message unacknowledged or a send repeated after
   an error: such an item has no id that would let the worker recognise it);
3. computes the oracle: per contact, the pure merge applied once per distinct valid event in time
   order to the contact as seeded;
4. starts ``--workers`` real ``contact-sync worker --concurrency 2`` processes under a supervisor
   that restarts any that dies (and kills what a dead one left behind, as a container runtime
   would), with ``CONTACT_SYNC_VISIBILITY_TIMEOUT_SECONDS=60`` so that on Redis the messages of
   killed workers come back within the run (RabbitMQ gives them back at once);
5. publishes the deliveries over ``--publish-seconds`` (single-event messages with
   ``send_task``, batch messages through ``EventPublisher``, raw messages by hand: ``LPUSH``
   on Redis, ``basic_publish`` on RabbitMQ; half evenly, half in a burst just before each
   fault), retrying a send the broker refused, and meanwhile injects faults at random moments,
   each once the broker shows messages taken and not yet acknowledged: SIGKILL of a busy
   worker's pool child and of a busy worker's main process, a SIGTERM warm shutdown,
   PostgreSQL connections terminated (``pg_terminate_backend``) and PostgreSQL restarted
   (``pg_ctl restart -m fast``), and two broker faults: on Redis the server killed (SIGKILL)
   and shut down (``SHUTDOWN``, AOF persisted) then restarted on the same folder; on RabbitMQ
   every connection of its virtual host closed, and one of them
   (``rabbitmqctl close_all_connections --vhost``, other virtual hosts untouched). After each
   it measures the recovery time (until the inbox grows again);
6. waits until the inbox holds every valid event, the dead letters every invalid event and
   malformed entry, and the broker holds no queued or unacknowledged message (or a timeout),
   then compares the database with the oracle and prints what it found.

The last line is ``published=N lost=L applied_twice=A differing=D`` (N: distinct events and
malformed entries); the line before it counts the malformed entries sent and parked. The exit
code is 0 only when every count there is 0 and nothing else differs (a missing or wrong dead
letter, a malformed entry not parked or not keeping its text, an event applied to the wrong
contact, a contact that should not exist, a message still queued or unacknowledged when the
run stops waiting). Exit code 2: the harness itself failed (a server
did not start, ``rabbitmqctl`` refused); 130: interrupted.

``--poison-max-attempts`` (default 1000) is high so that messages the harness killed are not
parked as ``poison_message``. On Redis a trigger on ``delivery_attempts`` (harness-only, in its
private database) keeps every count the worker writes, so the highest is printed, with how
many messages the default limit of 3 would have parked; RabbitMQ counts deliveries itself.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import itertools
import json
import logging
import os
import pickle
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
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import psycopg
import redis
from kombu.connection import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, select

from contact_sync.accounts.teams import Team, create_team
from contact_sync.calls.apply import STATE_FIELDS
from contact_sync.calls.events import CallCompleted, parse_event
from contact_sync.calls.merge import ContactState, MergePolicy, merge
from contact_sync.contacts.records import provenance_from_json
from contact_sync.contacts.store import create_contact
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.db.tables import (
    contact_history,
    contacts,
    dead_letters,
    processed_events,
)
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import (
    POISON_QUEUE,
    QUEUE,
    TASK_APPLY,
    create_app,
    event_queues,
    queue_depth,
)
from contact_sync.worker.publisher import EventPublisher

T = TypeVar("T")

VISIBILITY_TIMEOUT = 60  # the minimum the settings allow
DATABASE = "chaos"
# In a size's faults, "broker" stands for the broker's own faults, in order (Broker.faults).
BROKER_FAULT = "broker"
REDIS_FAULTS = ("redis_kill", "redis_shutdown")
AMQP_FAULTS = ("amqp_close_all", "amqp_close_one")
# Events and hand-built Celery messages come from the tests' factories, so the bench and the
# tests send the same contract.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.factories import call_event, envelope, task_body, task_headers  # noqa: E402


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
    + (BROKER_FAULT,) * 2
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
        BROKER_FAULT,
        BROKER_FAULT,
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
    """A throwaway redis-server with an append-only file synced on every write (by default)."""

    def __init__(self, root: Path, appendfsync: str = "always") -> None:
        self.dir = root / "redis"
        self.port = free_port()
        self.appendfsync = appendfsync
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
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", self.appendfsync,
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


# --- the broker: a private Redis, or a RabbitMQ virtual host of the harness' own ----------


@dataclass(frozen=True)
class Raw:
    """A task message sent by hand, not through Celery (as a publisher in any language would).

    On Redis it is wrapped in the envelope of docs/celery-message.md and pushed on the list;
    on RabbitMQ it is published to the queue with these headers and content type.
    """

    body: bytes
    headers: dict[str, Any] | None
    content_type: str = "application/json"
    content_encoding: str = "utf-8"


@dataclass(frozen=True)
class Malformed:
    """A raw item no worker can use, sent once: it must become one ``invalid_payload`` letter.

    Redis items are bytes pushed on the list as they are; their letter is the one whose
    ``raw_body`` is their text. RabbitMQ items are messages, told apart by a ``marker`` of
    their own in the body. Either way the letter's payload must keep what was sent: ``kept``
    is one of its values (the text, or the decoded JSON of a body the worker could decode).
    """

    kind: str
    item: Raw | bytes
    kept: Any
    marker: str | None = None

    @property
    def key(self) -> str:
        return f"marker:{self.marker}" if self.marker is not None else str(self.kept)


def as_text(data: bytes) -> str:
    """Bytes as a dead letter keeps them: UTF-8, anything else and NUL as U+FFFD."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _kept(raw: Raw) -> Any:
    """What a dead letter keeps of ``raw``'s body: its JSON when it is JSON, else its text."""
    if raw.content_type == "application/json":
        with contextlib.suppress(ValueError):
            return json.loads(raw.body)
    return as_text(raw.body)


def _marker() -> str:
    return f"chaos-malformed-{uuid.uuid4().hex[:12]}"


def _task_headers(task: str = TASK_APPLY) -> dict[str, Any]:
    return task_headers(task)


class RawSender(Protocol):
    def send(self, item: Raw | bytes) -> None: ...

    def close(self) -> None: ...


class Broker(Protocol):
    """What the harness needs of a broker, each answered the broker's own way."""

    kind: str
    faults: tuple[str, ...]  # what the sizes' "broker" faults become, in order

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def describe(self) -> str: ...

    def watch(self) -> None:
        """Faults are coming: keep ``unacked`` quick to answer until ``unwatch``."""

    def unwatch(self) -> None: ...

    def unacked(self) -> int | None:
        """Messages taken by a worker and not acknowledged (None: the broker did not say)."""

    def drained(self) -> tuple[bool, str]:
        """Whether nothing is queued or unacknowledged any more, and the counts in words."""

    def sender(self) -> RawSender: ...

    def inject(self, kind: str, rng: random.Random) -> str:
        """Inject one of ``faults``; returns what was done."""

    def malformed(self, rng: random.Random, sets: int) -> list[Malformed]: ...


class RedisSender:
    """``LPUSH`` of raw entries; redis-py's own retries are off, so every attempt is counted."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(
            port=port, socket_timeout=5, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def send(self, item: Raw | bytes) -> None:
        self.client.lpush(QUEUE, item if isinstance(item, bytes) else _envelope(item))

    def close(self) -> None:
        self.client.close()


class RedisBroker:
    """The private ``redis-server`` (AOF, fsync always); its faults kill and shut it down."""

    kind = "redis"
    faults: tuple[str, ...] = REDIS_FAULTS

    def __init__(self, root: Path) -> None:
        self.server = PrivateRedis(root)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def describe(self) -> str:
        return f"Redis (AOF, fsync always) on port {self.server.port}"

    def watch(self) -> None:
        """Nothing to do: ``HLEN unacked`` takes a millisecond."""

    def unwatch(self) -> None:
        """Nothing to do."""

    def _client(self) -> redis.Redis:
        return redis.Redis(port=self.server.port, socket_timeout=2, socket_connect_timeout=2)

    def unacked(self) -> int | None:
        client = self._client()
        try:
            return int(client.hlen("unacked"))
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _counts(self) -> tuple[int, int]:
        client = self._client()
        try:
            return int(client.llen(QUEUE)), int(client.hlen("unacked"))
        finally:
            client.close()

    def drained(self) -> tuple[bool, str]:
        # A message is briefly in neither list nor hash: a second look a moment later.
        try:
            queued, unacked = self._counts()
            if not queued and not unacked:
                time.sleep(0.2)
                queued, unacked = self._counts()
        except redis.RedisError as error:
            return False, f"redis: {type(error).__name__}"
        return queued == 0 and unacked == 0, f"{queued} queued, {unacked} unacknowledged"

    def sender(self) -> RawSender:
        return RedisSender(self.server.port)

    def inject(self, kind: str, rng: random.Random) -> str:
        began = time.monotonic()
        if kind == "redis_kill":
            self.server.kill()
            what = "SIGKILL"
        elif kind == "redis_shutdown":
            self.server.shutdown()
            what = "SHUTDOWN"
        else:
            raise HarnessError(f"unknown Redis fault {kind}")
        time.sleep(rng.uniform(0.3, 1.5))
        self.server.start()
        return f"{what}, restarted: down {time.monotonic() - began:.1f} s"

    def malformed(self, rng: random.Random, sets: int) -> list[Malformed]:
        """Entries pushed on the list that are no kombu envelope at all."""
        items: list[Malformed] = []
        for _ in range(sets):
            headers = {**_task_headers(), "note": _marker()}
            envelope = json.loads(_envelope(Raw(task_body([{}]), headers)))
            no_properties = {k: v for k, v in envelope.items() if k != "properties"}
            no_body = {k: v for k, v in envelope.items() if k != "body"}
            bad_base64 = {**envelope, "body": f"!!{_marker()} is not base64!!"}
            entries: list[tuple[str, bytes]] = [
                ("not JSON", f"hello world {_marker()}".encode()),
                ("{}", b"{}"),
                ("[]", b"[]"),
                ("a JSON string", json.dumps(f"a JSON string {_marker()}").encode()),
                ("no properties", json.dumps(no_properties).encode()),
                ("no body", json.dumps(no_body).encode()),
                ("bad base64", json.dumps(bad_base64).encode()),
                ("4 KB of random bytes", rng.randbytes(4096)),
            ]
            items += [Malformed(kind, data, as_text(data)) for kind, data in entries]
        return items


class AmqpSender:
    """``basic_publish`` with publisher confirms on a connection of its own, made again after
    an error (a closed connection, say)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: Connection | None = None
        self.channel: Any = None

    def send(self, item: Raw | bytes) -> None:
        if not isinstance(item, Raw):
            raise TypeError("RabbitMQ takes messages, not list entries")
        try:
            if self.channel is None:
                self.connection = Connection(  # type: ignore[no-untyped-call]
                    self.url, connect_timeout=5, transport_options={"confirm_publish": True}
                )
                connection: Any = self.connection
                self.channel = connection.channel()
                queue, _poison = event_queues()
                # Declared as every publisher must, with the worker's arguments.
                queue(self.channel).declare()  # type: ignore[no-untyped-call]
            message = self.channel.prepare_message(
                item.body,
                content_type=item.content_type,
                content_encoding=item.content_encoding,
                headers=item.headers,
                properties={"delivery_mode": 2},
            )
            self.channel.basic_publish(message, exchange="", routing_key=QUEUE)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.release()  # type: ignore[no-untyped-call]
        self.connection = self.channel = None


class AmqpBroker:
    """A virtual host of the harness' own on a RabbitMQ server, deleted at the end.

    Its faults close connections of that virtual host only (``rabbitmqctl
    close_all_connections --vhost``): other users of the server are not touched. Queue counts
    come from ``rabbitmqctl list_queues``, which reports RabbitMQ's statistics, refreshed every
    ``collect_statistics_interval`` (5 s by default): "drained" is believed only after empty
    readings that span more than one interval, and the messages waiting are also read live
    with a passive declaration. A ``rabbitmqctl`` call takes a second or two (an Erlang VM
    starts), so while faults are injected a thread keeps the latest count at hand.
    """

    kind = "amqp"
    faults: tuple[str, ...] = AMQP_FAULTS

    def __init__(self, server_url: str, prefix: str = "contact_sync_chaos") -> None:
        parts = urlsplit(server_url)
        self.server_url = server_url
        self.vhost = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.user = parts.username or "guest"
        self._url = parts._replace(path=f"/{self.vhost}").geturl()
        self.created = False
        self.stats_interval = 5.0
        self._empty_since: float | None = None
        self._latest: int | None = None
        self._watching = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self._url

    def _ctl(self, *args: str) -> str:
        binary = shutil.which("rabbitmqctl")
        if binary is None:
            raise HarnessError(
                "rabbitmqctl is not installed: the harness makes a RabbitMQ virtual host with it"
            )
        result = subprocess.run(
            [binary, *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            raise HarnessError(f"`rabbitmqctl {' '.join(args[:3])}` failed: {lines[0]}")
        return result.stdout

    def start(self) -> None:
        try:
            with Connection(self.server_url, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
                conn.ensure_connection(max_retries=1, timeout=5)
        except Exception as error:
            raise HarnessError(f"no RabbitMQ server lets us in: {error}") from error
        self._ctl("add_vhost", self.vhost)
        self.created = True
        self._ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")
        found = self._ctl("eval", "application:get_env(rabbit, collect_statistics_interval).")
        with contextlib.suppress(ValueError):
            self.stats_interval = int(found.strip().strip("{}").split(",")[-1]) / 1000

    def stop(self) -> None:
        if self.created:
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                self._ctl("delete_vhost", self.vhost)
            self.created = False

    def describe(self) -> str:
        host = urlsplit(self.server_url).hostname
        return f"RabbitMQ on {host}, virtual host {self.vhost} (the project's quorum queue)"

    def _queues(self) -> dict[str, tuple[int, int]]:
        """(ready, unacknowledged) by queue name, as RabbitMQ's statistics last saw them."""
        rows = json.loads(
            self._ctl(
                "list_queues", "-q", "-p", self.vhost,
                "name", "messages_ready", "messages_unacknowledged", "--formatter", "json",
            ) or "[]"
        )  # fmt: skip
        return {
            row["name"]: (int(row["messages_ready"] or 0), int(row["messages_unacknowledged"] or 0))
            for row in rows
        }

    def _read_unacked(self) -> int | None:
        try:
            return sum(unacked for _ready, unacked in self._queues().values())
        except (HarnessError, subprocess.TimeoutExpired, ValueError):
            return None

    def _sample(self) -> None:
        while self._watching.is_set():
            self._latest = self._read_unacked()

    def watch(self) -> None:
        self._watching.set()
        self._sampler = threading.Thread(target=self._sample, name="rabbitmq-stats", daemon=True)
        self._sampler.start()

    def unwatch(self) -> None:
        self._watching.clear()
        if self._sampler is not None:
            self._sampler.join(timeout=70)
            self._sampler = None

    def unacked(self) -> int | None:
        if self._watching.is_set():
            return self._latest
        return self._read_unacked()

    def drained(self) -> tuple[bool, str]:
        try:
            stats = self._queues()
            with Connection(self.url, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
                waiting = queue_depth(conn) + queue_depth(conn, POISON_QUEUE)
        except Exception as error:  # rabbitmqctl or the connection failed: look again later
            self._empty_since = None
            return False, f"rabbitmq: {type(error).__name__}"
        ready = sum(r for r, _ in stats.values())
        unacked = sum(u for _, u in stats.values())
        text = f"{waiting} queued, {unacked} unacknowledged (statistics: {ready} ready)"
        now = time.monotonic()
        if waiting or ready or unacked:
            self._empty_since = None
            return False, text
        if self._empty_since is None:
            self._empty_since = now
        if now - self._empty_since <= self.stats_interval + 0.5:
            return False, f"{text}; confirming over a statistics interval"
        return True, text

    def sender(self) -> RawSender:
        return AmqpSender(self.url)

    def inject(self, kind: str, rng: random.Random) -> str:
        reason = f"chaos: {kind}"
        if kind == "amqp_close_all":
            out = self._ctl("close_all_connections", "--vhost", self.vhost, reason)
        elif kind == "amqp_close_one":
            out = self._ctl("close_all_connections", "--vhost", self.vhost, "--limit", "1", reason)
        else:
            raise HarnessError(f"unknown RabbitMQ fault {kind}")
        closed = next((line for line in out.splitlines() if line.startswith("Closed")), "?")
        return f"rabbitmqctl close_all_connections --vhost: {closed.lower()}"

    def malformed(self, rng: random.Random, sets: int) -> list[Malformed]:
        """Messages whose headers, content type or body no worker can use."""

        def call(marker: str) -> bytes:
            return task_body([{"note": marker}])

        def note(marker: str) -> bytes:
            return json.dumps({"note": marker}).encode()

        def other_id() -> dict[str, Any]:
            return {"lang": "py", "id": str(uuid.uuid4())}

        items: list[Malformed] = []
        for _ in range(sets):
            m = [_marker() for _ in range(8)]
            made = [
                ("no headers", Raw(note(m[0]), None)),
                ("no task header", Raw(call(m[1]), other_id())),
                ("a body that is not JSON", Raw(b"\xff{" + m[2].encode(), _task_headers())),
                ("text/plain", Raw(f"call me back {m[3]}".encode(), _task_headers(), "text/plain")),
                # Never unpickled: the worker accepts JSON only.
                (
                    "pickle",
                    Raw(
                        pickle.dumps({"note": m[4]}),
                        _task_headers(),
                        "application/x-python-serialize",
                        "binary",
                    ),
                ),
                (
                    "3 KB of random bytes",
                    Raw(
                        rng.randbytes(2048) + m[5].encode() + rng.randbytes(1024),
                        None,
                        "application/octet-stream",
                        "binary",
                    ),
                ),
                ("a body of the wrong shape", Raw(note(m[6]), _task_headers())),
                ("a task name that is not a string", Raw(call(m[7]), {**other_id(), "task": 42})),
            ]
            items += [
                Malformed(kind, raw, _kept(raw), marker)
                for (kind, raw), marker in zip(made, m, strict=True)
            ]
        return items


def make_broker(spec: str, root: Path) -> Broker:
    """``redis`` (a private server in ``root``) or ``amqp://…`` (a virtual host of our own)."""
    if spec == "redis":
        return RedisBroker(root)
    if spec.startswith(("amqp://", "amqps://", "pyamqp://")):
        return AmqpBroker(spec)
    raise HarnessError(f"--broker must be redis or an amqp:// URL, not {spec!r}")


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
            sys.executable, "-m", "contact_sync.cli.main", "worker",
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
    malformed: list[Malformed] = field(default_factory=list)  # raw items, each sent once
    # (route, payload): "single" and "batch" an event, "raw" a Raw, "malformed" a Malformed
    deliveries: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def distinct(self) -> int:
        return len(self.valid) + len(self.invalid) + len(self.garbage) + len(self.malformed)


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


def _envelope(raw: Raw) -> str:
    """``raw`` as a Celery protocol-2 message in kombu's Redis envelope (docs/celery-message.md).

    Each call makes a new delivery tag: each push is a message of its own.
    """
    return envelope(
        raw.body,
        content_type=raw.content_type,
        content_encoding=raw.content_encoding,
        headers=raw.headers,
    )


def generate(
    teams: list[Team], people: list[Seeded], size: Size, rng: random.Random, broker: Broker
) -> DataSet:
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
        event = call_event(
            person.team.id,
            event_id=f"evt_{uuid.uuid4().hex[:10]}_{index:05d}",
            call_id=f"call_{uuid.uuid4().hex[:12]}",
            occurred_at=_when(rng, base, minutes),
            outcome=rng.choice(OUTCOMES),
        )
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
    raw: list[Raw] = []
    for index in range(n_garbage):
        if index % 2 == 0:
            marker = f"chaos-garbage-{uuid.uuid4().hex[:8]}"
            data.garbage.append(marker)
            raw.append(Raw(f"{{{marker} is not json".encode(), _task_headers()))
        else:
            event = {"event_id": f"evt_unknown_task_{uuid.uuid4().hex[:8]}", "note": "chaos"}
            data.invalid[event["event_id"]] = "invalid_payload"
            body = [[event], {}, {"callbacks": None, "errbacks": None, "chain": None}]
            raw.append(Raw(json.dumps(body).encode(), _task_headers("contact_sync.no_such_task")))
    # Raw items that are no message at all (Redis) or no usable task message (RabbitMQ).
    data.malformed = broker.malformed(rng, max(1, size.events // 1500))
    now = datetime.now(UTC)
    for event_id, payload in data.valid.items():
        parse_event(payload, now=now)  # the oracle's premise: these are valid
        assert event_id == payload["event_id"]
    for event in events:
        route = "single" if rng.random() < 0.35 else "batch"
        data.deliveries += [(route, event)] * rng.choices([1, 2, 3], weights=[5, 3, 2])[0]
    for message in raw:
        data.deliveries += [("raw", message)] * rng.choice([1, 2])
    data.deliveries += [("malformed", item) for item in data.malformed]
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
        state = ContactState(
            **{
                name: copy.deepcopy(getattr(person.row, name))
                for name in names
                if name != "provenance"
            },
            provenance=provenance_from_json(person.row.provenance),
        )
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

    def __init__(self, app: Any, broker: Broker, data: DataSet, timeline: list[float]) -> None:
        self.app = app
        self.broker = broker
        self.data = data
        self.timeline = timeline  # per delivery: when to send it (seconds after the start)
        self.started = 0.0
        self.single_messages = 0
        self.raw_messages = 0
        self.malformed_sent = 0
        # Malformed items whose send raised and was repeated (key -> extra attempts): the
        # failed attempt may have reached the queue, so one more dead letter is no error.
        self.malformed_resent: Counter[str] = Counter()
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

    def _retry(self, action: Callable[[], T], failed: Callable[[], None] | None = None) -> T:
        deadline = time.monotonic() + 120
        while True:
            try:
                return action()
            except Exception as error:  # kombu and redis-py raise many kinds
                self.refusals[type(error).__name__] += 1
                if time.monotonic() > deadline:
                    raise
                if failed is not None:
                    failed()
                time.sleep(0.2)

    def _run(self) -> None:
        try:
            self._publish()
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()

    def _publish(self) -> None:
        sender = self.broker.sender()
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
                self._retry(partial(sender.send, payload))
                self.raw_messages += 1
            elif route == "malformed":
                key = payload.key
                self._retry(
                    partial(sender.send, payload.item),
                    failed=partial(self.malformed_resent.update, [key]),
                )
                self.malformed_sent += 1
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
        sender.close()


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
    wall_at: float = 0.0  # time.time() when injected


class Injector:
    def __init__(
        self, rng: random.Random, workers: Workers, pg: PrivatePostgres, broker: Broker
    ) -> None:
        self.rng = rng
        self.workers = workers
        self.pg = pg
        self.broker = broker

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

    def _wait_in_flight(self) -> int | None:
        """Strike while messages are taken and unacknowledged (up to 3 s of waiting).

        Returns the last count seen. On RabbitMQ each look is a ``rabbitmqctl`` call of a
        second or two, and its count is the broker's statistics (up to 5 s old).
        """
        deadline = time.monotonic() + 3
        while True:
            unacked = self.broker.unacked()
            if unacked or time.monotonic() > deadline:
                return unacked
            time.sleep(0.005)

    def inject(self, kind: str, started: float) -> Fault:
        seen = self._wait_in_flight()
        fault = Fault(kind, time.monotonic(), wall_at=time.time())
        if kind in ("kill_child", "kill_main", "sigterm"):
            target = self._busy_worker()
            fault.slot, fault.incarnation = target.slot, target.number
            main = target.process.pid
            if self.broker.kind == "redis":  # a fresh count costs a millisecond there
                seen = self.broker.unacked()
            unacked = (
                f"{'?' if seen is None else seen} messages unacknowledged in {self.broker.kind}"
            )
            if kind == "kill_child":
                pool = wait_until("the pool children", lambda: children_of(main), timeout=10)
                child = self.rng.choice(pool)
                os.kill(child, signal.SIGKILL)
                fault.detail = (
                    f"worker {target.slot}.{target.number}: pool child {child} ({unacked})"
                )
            elif kind == "kill_main":
                os.kill(main, signal.SIGKILL)
                fault.detail = (
                    f"worker {target.slot}.{target.number}: main process {main} ({unacked})"
                )
            else:
                target.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    target.process.wait(timeout=60)
                fault.detail = (
                    f"worker {target.slot}.{target.number} ({unacked}): warm shutdown took "
                    f"{time.monotonic() - fault.at:.1f} s (exit {target.process.returncode})"
                )
        elif kind in self.broker.faults:
            fault.detail = self.broker.inject(kind, self.rng)
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
    malformed_parked: int = 0
    malformed_missing: list[str] = field(default_factory=list)  # kinds
    malformed_wrong_reason: list[str] = field(default_factory=list)
    malformed_twice: list[str] = field(default_factory=list)
    malformed_not_kept: list[str] = field(default_factory=list)
    malformed_resent_twice: int = 0  # parked twice after a send that raised and was repeated
    malformed_again_after_fault: int = 0  # parked again: a fault returned it unacknowledged
    # What the broker still held when the run gave up waiting (a message stuck unacknowledged,
    # or one that goes round for ever); empty when it drained.
    undrained: str = ""
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
            or self.malformed_missing
            or self.malformed_wrong_reason
            or self.malformed_twice
            or self.malformed_not_kept
            or self.undrained
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


def malformed_letters(items: list[Malformed], letters: list[Any]) -> dict[str, list[Any]]:
    """The dead letters of each malformed item's key (its exact text, or its marker)."""
    texts = {item.kept for item in items if item.marker is None}
    markers = {item.marker for item in items if item.marker is not None}
    found: dict[str, list[Any]] = defaultdict(list)
    for letter in letters:
        payload = letter.payload
        raw_body = payload.get("raw_body") if isinstance(payload, dict) else None
        if isinstance(raw_body, str) and raw_body in texts:
            found[raw_body].append(letter)
        dumped = json.dumps(payload, ensure_ascii=False) if markers else ""
        for marker in markers:
            if marker in dumped:
                found[f"marker:{marker}"].append(letter)
    return found


# Faults after which a worker may meet a message it parked again: its acknowledgement may
# not have reached the broker (a killed or stopped main process, a lost connection), or its
# dead letter's commit may have succeeded unseen (the database went away meanwhile). The
# pool children never park malformed items.
RETURNING = frozenset({"kill_main", "sigterm", "pg_terminate", "pg_restart"}) | frozenset(
    REDIS_FAULTS + AMQP_FAULTS
)


def judge_malformed(
    verdict: Verdict,
    items: list[Malformed],
    letters: list[Any],
    resent: Counter[str],
    faults: list[Fault],
) -> None:
    """Each malformed item: exactly one dead letter ``invalid_payload`` that keeps its text.

    Identical items (``{}`` in each set) share a key: as many letters as items. A letter
    more is no error in two cases only, both at-least-once delivery with nothing to recognise
    the item by (it has no event id): its send raised and was repeated (the first attempt may
    have reached the queue), or a fault that can return a parked but unacknowledged message
    struck between the previous letter and this one. Any other second letter is an error.
    """
    found = malformed_letters(items, letters)
    kinds: dict[str, list[str]] = defaultdict(list)
    kept: dict[str, Any] = {}
    for item in items:
        kinds[item.key].append(item.kind)
        kept[item.key] = item.kept
    returning = [f for f in faults if f.kind in RETURNING]
    for key, names in kinds.items():
        mine = sorted(found.get(key, []), key=lambda letter: letter.first_seen_at)
        for letter in mine:
            values = letter.payload.values() if isinstance(letter.payload, dict) else ()
            if not any(value == kept[key] for value in values):
                verdict.malformed_not_kept.append(f"{names[0]}: {str(letter.payload)[:200]}")
        verdict.malformed_parked += min(len(names), len(mine))
        if len(mine) < len(names):
            verdict.malformed_missing += names[len(mine) :]
        allowed_resends = resent[key]
        for index in range(len(names), len(mine)):
            before = mine[index - 1].first_seen_at.timestamp() - 1.0
            after = mine[index].first_seen_at.timestamp()
            if any(f.wall_at <= after and f.wall_done >= before for f in returning):
                verdict.malformed_again_after_fault += 1
            elif allowed_resends:
                allowed_resends -= 1
                verdict.malformed_resent_twice += 1
            else:
                verdict.malformed_twice.append(f"{names[0]}: {len(mine)} letters")
                break
        reasons = sorted({letter.reason for letter in mine} - {"invalid_payload"})
        if reasons:
            verdict.malformed_wrong_reason.append(f"{names[0]}: {reasons}")


def judge(
    engine: Engine,
    data: DataSet,
    expected: dict[str, dict[str, Any]],
    resent: Counter[str],
    faults: list[Fault],
) -> Verdict:
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
    judge_malformed(verdict, data.malformed, letters, resent, faults)
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


def _worker_env(pg: PrivatePostgres, broker: Broker, poison_max: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    env.update(
        CONTACT_SYNC_DATABASE_URL=pg.url,
        CONTACT_SYNC_BROKER_URL=broker.url,
        CONTACT_SYNC_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        CONTACT_SYNC_POISON_MAX_ATTEMPTS=str(poison_max),
        PYTHONUNBUFFERED="1",
    )
    return env


def _settled(engine: Engine, data: DataSet, broker: Broker) -> tuple[bool, int, str]:
    """Whether every event and malformed item has its outcome and the broker holds nothing
    more; the valid events still missing; and what is missing, in words.

    The broker is asked only once the database is complete (on RabbitMQ each look is a
    ``rabbitmqctl`` call).
    """
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
    found = malformed_letters(data.malformed, letters)
    expected = Counter(item.key for item in data.malformed)
    unparked += sum(max(0, n - len(found.get(key, []))) for key, n in expected.items())
    state = f"{missing} valid events without outcome, {unparked} invalid without dead letter"
    if missing or unparked:
        return False, missing, state
    drained, counts = broker.drained()
    return drained, missing, f"{state}, {counts}"


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
    pg = PrivatePostgres(root)
    broker = make_broker(args.broker, root)
    mine = itertools.cycle(broker.faults)
    size = replace(
        size, faults=tuple(next(mine) if kind == BROKER_FAULT else kind for kind in size.faults)
    )
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
        broker.start()
        log(f"  private PostgreSQL on port {pg.port}; {broker.describe()}")
        engine = make_engine(pg.url)
        upgrade(engine)
        instrument(engine)
        teams, people = seed(engine, size, rng)
        data = generate(teams, people, size, rng, broker)
        # The workers' environment has no CONTACT_SYNC_MIN_CONFIDENCE: the default applies.
        expected = oracle(data, Settings.model_fields["min_confidence"].default)
        log(
            f"  {data.distinct} distinct events ({len(data.valid)} valid, "
            f"{len(data.invalid) + len(data.garbage)} invalid, {len(data.malformed)} malformed "
            f"raw items) over {len(people)} contacts in {len(teams)} teams; "
            f"{len(data.deliveries)} deliveries"
        )
        env = _worker_env(pg, broker, args.poison_max_attempts)
        workers = Workers(root, env, args.workers, 2)
        workers.start()
        workers.wait_ready(timeout=90)
        monitor = InboxMonitor(pg.dsn())
        monitor.start()
        app = create_app(Settings(broker_url=broker.url, database_url=pg.url))
        plan, timeline = schedule(size, rng, publish_seconds, len(data.deliveries))
        publishing = Publishing(app, broker, data, timeline)
        injector = Injector(rng, workers, pg, broker)
        log(
            f"  publishing over {publish_seconds:.0f} s (half evenly, half in a burst before "
            f"each fault) with {args.workers} workers; faults:"
        )
        broker.watch()
        started = time.monotonic()
        publishing.start(started)
        faults: list[Fault] = []
        try:
            for offset, kind in plan:
                time.sleep(max(0.0, started + offset - time.monotonic()))
                faults.append(injector.inject(kind, started))
        finally:
            broker.unwatch()
        publishing.done.wait()
        if publishing.error is not None:
            raise HarnessError(f"publishing failed: {publishing.error!r}")
        log(f"  published in {time.monotonic() - started:.1f} s; waiting for the last deliveries")
        deadline = time.monotonic() + size.finish_seconds
        state, all_applied, settled = "", None, False
        while time.monotonic() < deadline:
            settled, missing, state = _settled(engine, data, broker)
            if missing == 0 and all_applied is None:
                all_applied = time.monotonic() - started
            if settled:
                break
            time.sleep(0.5)
        else:
            if "queued" not in state:
                state += f"; broker: {broker.drained()[1]}"
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
        verdict = judge(engine, data, expected, publishing.malformed_resent, faults)
        verdict.undrained = "" if settled else state
        verdict.publisher_dropped = publishing.batch_handed - publishing.batch_events
        verdict.lost_how = explain_lost(verdict.lost, data, publishing, faults)
        if verdict.lost:
            (root / "lost.json").write_text(json.dumps(verdict.lost_how, indent=1))
        report(args, engine, broker, data, publishing, workers, monitor, faults, verdict, refused)
        log(
            f"  total {time.monotonic() - began:.0f} s (publish + settle {settle_time:.0f} s); "
            f"{'PASS' if verdict.ok else 'FAIL'}"
        )
        print(
            f"malformed sent={publishing.malformed_sent} parked={verdict.malformed_parked} "
            f"again_after_fault={verdict.malformed_again_after_fault} "
            f"again_after_resend={verdict.malformed_resent_twice} "
            f"missing={len(verdict.malformed_missing)} "
            f"twice={len(verdict.malformed_twice)} "
            f"wrong_reason={len(verdict.malformed_wrong_reason)} "
            f"not_kept={len(verdict.malformed_not_kept)} ({broker.kind})",
            flush=True,
        )
        print(
            f"published={data.distinct} lost={len(verdict.lost)} "
            f"applied_twice={verdict.applied_twice_count} differing={len(verdict.differing)}",
            flush=True,
        )
        return 0 if verdict.ok else 1
    finally:
        broker.unwatch()
        if monitor is not None:
            monitor.stop()
        if workers is not None:
            workers.stop()
        if app is not None:
            with contextlib.suppress(Exception):
                app.close()
        if engine is not None:
            engine.dispose()
        broker.stop()
        pg.stop()
        if args.keep:
            log(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(
    args: argparse.Namespace,
    engine: Engine,
    broker: Broker,
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
    lines = Counter(str(r.get("message")) for r in workers.log_records())
    moved = Counter(
        str(r.get("message"))
        for r in workers.log_records()
        for _ in range(int(r.get("messages", 0)))
    )
    messages = (
        publishing.single_messages
        + publishing.batch_messages
        + publishing.raw_messages
        + publishing.malformed_sent
    )
    log("results:")
    log(
        f"  published: {data.distinct} distinct events and malformed items, "
        f"{len(data.deliveries)} deliveries in {messages} messages "
        f"({publishing.single_messages} single, {publishing.batch_messages} batches of "
        f"{publishing.batch_events} events, {publishing.raw_messages} raw, "
        f"{publishing.malformed_sent} malformed); sends refused by the broker and retried: "
        f"{dict(publishing.refusals) or 0}"
    )
    transit = ""
    if broker.kind == "redis":
        transit = (
            "; messages taken back from dead consumers' transit lists "
            f"{moved['messages a dead consumer had taken went back to the queue']}, "
            "stale items of live consumers' transit lists given back "
            f"{moved['messages a live consumer left in transit went back to the queue']}; "
            "entries that were no message handed over to be parked "
            f"{lines['a queue entry that is not a message is handed over to be parked']}"
        )
    log(
        f"  inbox: {verdict.outcomes['applied']} applied, {verdict.outcomes['no_change']} "
        f"no change, {verdict.outcomes['dead_lettered']} dead-lettered; worker log: "
        f"{dict(logged)} (duplicates absorbed: {logged['duplicate']}); transient retries "
        f"{retries}; error lines {errors}; workers that stopped on an unrecoverable error "
        f"{crashes}{transit}"
    )
    log(f"  dead letters by reason: {dict(sorted(verdict.reasons.items()))}")
    if verdict.letters_duplicated:
        log(
            f"  note: {len(verdict.letters_duplicated)} invalid events have more than one open "
            f"dead letter (e.g. {verdict.letters_duplicated[:3]})"
        )
    if broker.kind == "redis":  # RabbitMQ counts deliveries itself (x-delivery-count)
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
        ("malformed items without their dead letter", verdict.malformed_missing),
        ("malformed items parked under another reason", verdict.malformed_wrong_reason),
        ("malformed items parked again, no fault or resend between", verdict.malformed_twice),
        ("malformed items whose letter lost what was sent", verdict.malformed_not_kept),
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
    if verdict.undrained:
        log(f"  the broker never drained: {verdict.undrained}")


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
    parser.add_argument(
        "--broker",
        default="redis",
        help="redis (a private server, the default) or a RabbitMQ server's amqp:// URL "
        "(a virtual host of the harness' own is made there)",
    )
    args = parser.parse_args()
    if args.broker != "redis" and not args.broker.startswith(("amqp://", "amqps://", "pyamqp://")):
        parser.error(f"--broker must be redis or an amqp:// URL, not {args.broker!r}")
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
