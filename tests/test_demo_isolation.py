"""``contact-sync demo`` never touches the database and broker a deployment configured.

Both tests export production-like settings pointing at a private PostgreSQL
database and a private Redis server (Celery's own ``CELERY_BROKER_URL`` too,
which Celery lets override an app's broker), run the demo as a real process,
and compare the database's rows and the Redis server's keys and connection
count before and after.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select

from contact_sync.db.engine import make_engine
from contact_sync.db.tables import metadata

NOT_TOUCHED = "your configured database and broker are not touched"


@pytest.fixture
def production(postgres_url: str, redis_url: str) -> Iterator[dict[str, Any]]:
    """The exported settings of a deployment, and probes of its database and broker."""
    engine = make_engine(postgres_url)
    client = redis.Redis.from_url(redis_url)
    client.ping()  # the probe's own connection, opened before the first count
    env = {
        **os.environ,
        "CONTACT_SYNC_DATABASE_URL": postgres_url,
        "CONTACT_SYNC_BROKER_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
    }
    yield {"env": env, "engine": engine, "redis": client, "url": postgres_url}
    client.close()
    engine.dispose()


def _state(engine: Engine, client: redis.Redis) -> dict[str, Any]:
    """Every table's row count, every Redis key, and how many clients ever connected."""
    with engine.connect() as conn:
        rows = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
        }
    keys = {}
    for db in range(16):
        client.execute_command("SELECT", db)
        keys[db] = sorted(client.keys("*"))
    client.execute_command("SELECT", 0)
    connections = client.info("stats")["total_connections_received"]
    return {"rows": rows, "keys": keys, "connections": connections}


def _demo(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_demo_with_a_database_and_broker_exported_writes_to_neither_and_says_so_first(
    tmp_path: Path, production: dict[str, Any]
) -> None:
    before = _state(production["engine"], production["redis"])
    done = _demo(tmp_path, production["env"], "demo")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("demo: a throwaway SQLite file at "), first
    assert NOT_TOUCHED in first
    assert "Removed the demo data" in done.stdout
    assert _state(production["engine"], production["redis"]) == before
    throwaway = Path(first.removeprefix("demo: a throwaway SQLite file at ").split(" and ")[0])
    assert not throwaway.exists()
    assert not throwaway.parent.exists()  # its folder (and the broker's in it) went too
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_demo_keep_leaves_its_data_in_a_named_folder_here_with_a_command_to_read_it(
    tmp_path: Path, production: dict[str, Any]
) -> None:
    before = _state(production["engine"], production["redis"])
    done = _demo(tmp_path, production["env"], "--database-url", production["url"], "demo", "--keep")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert NOT_TOUCHED in first
    assert str(tmp_path / "contact-sync-demo" / "demo.sqlite3") in first
    assert _state(production["engine"], production["redis"]) == before
    assert [p.name for p in tmp_path.iterdir()] == ["contact-sync-demo"]
    assert [p.name for p in (tmp_path / "contact-sync-demo").iterdir()] == ["demo.sqlite3"]
    [command] = [
        line.strip()
        for line in done.stdout.splitlines()
        if line.strip().startswith("contact-sync --database-url")
    ]
    # Run exactly as printed, from another directory, with the production settings still exported.
    listing = _demo(Path("/"), production["env"], *shlex.split(command)[1:])
    assert listing.returncode == 0, listing.stderr
    assert "of 37" in listing.stdout  # 36 seeded contacts and one unknown caller
    assert _state(production["engine"], production["redis"]) == before

    again = _demo(tmp_path, production["env"], "demo", "--keep")
    assert again.returncode == 0, again.stderr
    assert str(tmp_path / "contact-sync-demo-2" / "demo.sqlite3") in again.stdout.splitlines()[0]
    assert (tmp_path / "contact-sync-demo" / "demo.sqlite3").exists()  # the first one is left
