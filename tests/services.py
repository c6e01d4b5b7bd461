"""Real PostgreSQL, Redis and RabbitMQ for the tests, never shared with another run.

The suite never mocks them, and two runs on one machine never see each other:

* PostgreSQL: the configured server's maintenance database (``postgres``) is
  used only to create this run's own database (``conftest.postgres_url``);
  when no server answers and the binaries are installed (as a non-root
  user), a private server is started in a temporary directory.
* Redis: a private ``redis-server`` on a free port, started for this run and
  stopped after it, so that the tests may flush any of its databases.
  ``CONTACT_SYNC_TEST_REDIS_URL`` names a server handed over to the tests
  instead (they flush its databases).
* RabbitMQ: the server of ``CONTACT_SYNC_TEST_AMQP_URL`` (default
  ``amqp://guest:guest@127.0.0.1:5672/``), with a virtual host made for this
  run by ``rabbitmqctl`` and deleted after it (``rabbitmq_vhost``).

Each failure stops the run with one line naming what is actually wrong.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import errors as pg_errors

# The maintenance database every PostgreSQL server has: the tests create their own from it.
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# A RabbitMQ server (its default virtual host); each run makes a virtual host of its own there.
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_problem(url: str) -> str | None:
    """Why ``url`` cannot serve as the maintenance database, or None when it can."""
    dsn = url.replace("+psycopg", "")
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            if not (row and row[0]):
                return f"the role connecting to {url} may not create databases (CREATEDB)"
            return None
    except pg_errors.InvalidCatalogName:
        return f"the server answers but the database in {url} does not exist"
    except pg_errors.InvalidAuthorizationSpecification as error:
        return f"the server refused the role in {url}: {str(error).strip()}"
    except psycopg.OperationalError as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if "does not exist" in text:
            return f"the server answers but the database in {url} does not exist"
        if "password" in text or "authentication" in text:
            return f"the server refused to authenticate the role in {url}: {text}"
        return f"no PostgreSQL server answers at {url}: {text}"


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return candidates[-1] if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A server URL (``postgresql+psycopg://…/postgres``) of its maintenance database."""
    url = os.environ.get("CONTACT_SYNC_TEST_DATABASE_URL", DEFAULT_PG)
    problem = _pg_problem(url)
    if problem is None:
        yield url
        return
    pg_ctl = _pg_ctl()
    if not problem.startswith("no PostgreSQL server") or pg_ctl is None or os.geteuid() == 0:
        hint = (
            "start it, install PostgreSQL (`apt-get install postgresql`) and run as a non-root "
            "user for a private server,"
            if problem.startswith("no PostgreSQL server")
            else "fix that,"
        )
        pytest.exit(f"{problem}; {hint} or set CONTACT_SYNC_TEST_DATABASE_URL", returncode=3)
    from pytest_postgresql.executors.proc import PostgreSQLExecutor

    tmp = tempfile.mkdtemp(prefix="contact-sync-pg-")
    port = free_port()
    executor = PostgreSQLExecutor(
        executable=pg_ctl,
        host="127.0.0.1",
        port=port,
        datadir=os.path.join(tmp, "data"),
        unixsocketdir=tmp,
        logfile=os.path.join(tmp, "pg.log"),
        startparams="-w",
        dbname="postgres",
        user="postgres",
    )
    with executor:
        executor.wait_for_postgres()
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """The URL of database 0 of a Redis server that belongs to this run alone."""
    given = os.environ.get("CONTACT_SYNC_TEST_REDIS_URL")
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            "redis-server is not installed: the tests start a private Redis for each run "
            "(`apt-get install redis-server`), or set CONTACT_SYNC_TEST_REDIS_URL to a server "
            "whose databases the tests may flush",
            returncode=3,
        )
    from pytest_redis.executor.process import RedisExecutor

    tmp = tempfile.mkdtemp(prefix="contact-sync-redis-")
    port = free_port()
    executor = RedisExecutor(
        executable=binary,
        databases=16,
        redis_timeout=30,
        loglevel="warning",
        host="127.0.0.1",
        port=port,
        datadir=Path(tmp),
    )
    with executor:
        yield f"redis://127.0.0.1:{port}/0"
    shutil.rmtree(tmp, ignore_errors=True)


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` (it manages the server of ``CONTACT_SYNC_TEST_AMQP_URL``)."""
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        pytest.exit(
            "rabbitmqctl is not installed: the tests make a RabbitMQ virtual host for each run "
            "with it (`apt-get install rabbitmq-server`, and run them as a user allowed to use "
            "rabbitmqctl, such as root)",
            returncode=3,
        )
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        pytest.exit(
            f"`rabbitmqctl {' '.join(args)}` failed ({result.returncode}): {lines[0]}; the "
            "tests need a running RabbitMQ they may add virtual hosts to",
            returncode=3,
        )
    return result.stdout


def _amqp_problem(url: str) -> str | None:
    from kombu.connection import Connection
    from kombu.utils.url import maybe_sanitize_url

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return f"no RabbitMQ server lets us in at {maybe_sanitize_url(url)}: {text}"
    return None


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """The URL of a RabbitMQ virtual host made for this run alone, deleted after it."""
    server = os.environ.get("CONTACT_SYNC_TEST_AMQP_URL", DEFAULT_AMQP)
    problem = _amqp_problem(server)
    if problem is not None:
        pytest.exit(
            f"{problem}; start RabbitMQ (`rabbitmq-server -detached`) or set "
            "CONTACT_SYNC_TEST_AMQP_URL",
            returncode=3,
        )
    parts = urlsplit(server)
    vhost = f"contact_sync_test_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
        yield parts._replace(path=f"/{vhost}").geturl()
    finally:
        rabbitmqctl("delete_vhost", vhost)
