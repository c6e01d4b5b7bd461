"""Real PostgreSQL and Redis for the tests: the running ones, or throwaway local servers.

The suite never mocks them. When the configured server is not reachable and
the server binaries are installed, a private server is started in a temporary
directory; when neither works the run stops with a message naming what to
install.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import redis

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_reachable(url: str) -> bool:
    try:
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return candidates[-1] if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A server URL (``postgresql+psycopg://…/dbname``) for a maintenance database."""
    url = os.environ.get("CONTACT_SYNC_TEST_DATABASE_URL", DEFAULT_PG)
    if _pg_reachable(url):
        yield url
        return
    pg_ctl = _pg_ctl()
    if pg_ctl is None or os.geteuid() == 0:
        pytest.exit(
            f"PostgreSQL is not reachable at {url} and no server can be started here "
            "(install PostgreSQL, e.g. `apt-get install postgresql`, and run as a non-root "
            "user, or set CONTACT_SYNC_TEST_DATABASE_URL)",
            returncode=3,
        )
    from pytest_postgresql.executors.proc import PostgreSQLExecutor

    tmp = tempfile.mkdtemp(prefix="contact-sync-pg-")
    port = _free_port()
    executor = PostgreSQLExecutor(
        executable=pg_ctl,
        host="127.0.0.1",
        port=port,
        datadir=os.path.join(tmp, "data"),
        unixsocketdir=tmp,
        logfile=os.path.join(tmp, "pg.log"),
        startparams="-w",
        dbname="test",
        user="postgres",
    )
    with executor:
        executor.wait_for_postgres()
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE test")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
    shutil.rmtree(tmp, ignore_errors=True)


def _redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: the configured server, or a private one from ``redis-server``."""
    url = os.environ.get("CONTACT_SYNC_TEST_REDIS_URL", DEFAULT_REDIS)
    if _redis_reachable(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            f"Redis is not reachable at {url} and redis-server is not installed "
            "(install it, e.g. `apt-get install redis-server`, or set "
            "CONTACT_SYNC_TEST_REDIS_URL)",
            returncode=3,
        )
    from pytest_redis.executor.process import RedisExecutor

    tmp = tempfile.mkdtemp(prefix="contact-sync-redis-")
    port = _free_port()
    executor = RedisExecutor(
        executable=binary,
        databases=16,
        redis_timeout=30,
        loglevel="warning",
        host="127.0.0.1",
        port=port,
        datadir=__import__("pathlib").Path(tmp),
    )
    with executor:
        yield f"redis://127.0.0.1:{port}/0"
    shutil.rmtree(tmp, ignore_errors=True)
