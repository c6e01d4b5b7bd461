"""The Redis users of ``deploy/redis/users.acl``, on a Redis started as the compose file starts it.

Anyone who can write to the queue is a publisher; with these users a publisher
may put messages on the queue and do nothing else: read none, take none,
delete nothing, flush nothing, reach no worker over pub/sub. The worker and
the API get what they use, and the worker none of Redis' dangerous commands.
The server is private to this module: ``deploy/redis/start.sh`` with the ACL
file and passwords of the test's own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from contact_sync.accounts.teams import Team, issue_api_key
from contact_sync.api import create_app as create_api
from contact_sync.db.tables import contacts
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import QUEUE
from contact_sync.worker.celery_app import create_app as create_celery
from contact_sync.worker.publisher import EventPublisher, publish_event
from tests.factories import call_event
from tests.services import free_port
from tests.workers import start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "deploy" / "redis" / "start.sh"
USERS = ("worker", "api", "publisher", "flower")


@dataclass
class AclRedis:
    port: int
    passwords: dict[str, str]
    rendered: Path  # the ACL file start.sh wrote

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user))


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    folder = tmp_path_factory.mktemp("acl-redis")
    passwords = {user: secrets.token_hex(16) for user in USERS}
    env = {
        **os.environ,
        **{f"REDIS_{user.upper()}_PASSWORD": password for user, password in passwords.items()},
        "REDIS_ACL_FILE": str(folder / "users.acl"),
    }
    port = free_port()
    log = folder / "redis.log"
    # What start.sh passes on to redis-server: a throwaway server on loopback.
    options = ("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder))
    with log.open("wb") as handle:
        process = subprocess.Popen(
            ["sh", str(START), *options],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = AclRedis(port, passwords, folder / "users.acl")
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if server.client("worker").ping():
                break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def _refused(client: redis.Redis, *command: Any) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_the_rendered_acl_file_holds_the_passwords_and_only_its_owner_reads_it(
    acl_redis: AclRedis,
) -> None:
    assert acl_redis.rendered.stat().st_mode & 0o077 == 0
    text = acl_redis.rendered.read_text()
    assert "#" not in text
    assert "${" not in text
    assert all(f">{password} " in text for password in acl_redis.passwords.values())


def test_nobody_gets_in_without_a_password(acl_redis: AclRedis) -> None:
    anonymous = redis.Redis(port=acl_redis.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()


@pytest.mark.slow
def test_a_publisher_user_sends_events_that_a_worker_user_applies(
    acl_redis: AclRedis, pg_engine: Engine, pg_team: Team, postgres_url: str, tmp_path: Path
) -> None:
    worker = start_worker(postgres_url, acl_redis.url("worker"), tmp_path / "worker.log")
    try:
        publisher_app = create_celery(Settings(broker_url=acl_redis.url("publisher")))
        phones = [f"+1202555{i:04d}" for i in range(101, 104)]
        events = [call_event(pg_team.id, minutes=i, phone=p) for i, p in enumerate(phones)]
        publish_event(events[0], app=publisher_app)
        with EventPublisher(app=publisher_app) as publisher:
            for event in events[1:]:
                publisher.publish(event)
        deadline = time.monotonic() + 60
        while True:
            with pg_engine.connect() as conn:
                applied = conn.execute(select(contacts.c.phone)).scalars().all()
            if sorted(applied) == phones:
                break
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.1)
        assert worker.poll() is None
    finally:
        stop_worker(worker)
    assert worker.returncode == 0


def test_the_publisher_user_may_push_to_the_queue_and_nothing_else(acl_redis: AclRedis) -> None:
    publisher = acl_redis.client("publisher")
    worker = acl_redis.client("worker")
    worker.delete(QUEUE, "someone.else", "unacked")
    worker.hset("unacked", "tag", "a message a worker holds")
    assert publisher.lpush(QUEUE, "a message") == 1
    assert publisher.llen(QUEUE) == 1
    refused = {
        "FLUSHDB": ("FLUSHDB",),
        "FLUSHALL": ("FLUSHALL",),
        "KEYS": ("KEYS", "*"),
        "SCAN": ("SCAN", "0"),
        "read the queue": ("LRANGE", QUEUE, "0", "-1"),
        "take from the queue": ("RPOP", QUEUE),
        "move from the queue": ("LMOVE", QUEUE, f"{QUEUE}.transit.x", "RIGHT", "LEFT"),
        "delete the queue": ("DEL", QUEUE),
        "trim the queue": ("LTRIM", QUEUE, "1", "0"),
        "read what workers hold": ("HGETALL", "unacked"),
        "push to an in-transit list": ("LPUSH", f"{QUEUE}.transit.x", "m"),
        "push to another list": ("LPUSH", "someone.else", "m"),
        "broadcast to workers": ("PUBLISH", "/0.celery.pidbox", "shutdown"),
        "listen to workers": ("SUBSCRIBE", "/0.celeryev"),
        "run a script": ("EVAL", "return 1", "0"),
        "configure": ("CONFIG", "GET", "*"),
        "shut down": ("SHUTDOWN",),
        "change users": ("ACL", "SETUSER", "publisher", "+@all"),
    }
    allowed = [name for name, command in refused.items() if not _refused(publisher, *command)]
    assert allowed == []
    assert worker.llen(QUEUE) == 1
    assert worker.hgetall("unacked") == {b"tag": b"a message a worker holds"}
    worker.delete(QUEUE, "unacked")


def test_the_worker_and_api_users_may_not_flush_or_reconfigure(acl_redis: AclRedis) -> None:
    worker, api = acl_redis.client("worker"), acl_redis.client("api")
    for client in (worker, api):
        for command in (("FLUSHDB",), ("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*")):
            assert _refused(client, *command), command
    assert _refused(api, "LRANGE", QUEUE, "0", "-1")
    assert _refused(api, "LPUSH", QUEUE, "m")
    assert _refused(api, "PUBLISH", "/0.celery.pidbox", "m")


def test_the_api_user_answers_readyz_and_keeps_the_rate_buckets_in_redis(
    acl_redis: AclRedis, pg_engine: Engine, pg_team: Team, postgres_url: str
) -> None:
    with pg_engine.begin() as conn:
        key = issue_api_key(conn, team_id=pg_team.id)
    settings = Settings(
        database_url=postgres_url, broker_url=acl_redis.url("api"), api_rate_limit_per_second=50
    )
    with TestClient(create_api(settings, engine=pg_engine)) as client:
        ready = client.get("/readyz")
        listed = client.get("/api/crm/contacts", headers={"Authorization": f"Bearer {key.api_key}"})
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["broker"] == "ok"
    assert listed.status_code == 200, listed.text
    # The bucket is in Redis (the limiter would have fallen back to its own memory otherwise).
    assert acl_redis.client("worker").exists(f"contact_sync:rate:{key.key_id}") == 1


@pytest.mark.parametrize("password", ["", "short1234", "has space and/slash in it 123456"])
def test_start_refuses_a_password_it_could_not_write_safely(password: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **{f"REDIS_{user.upper()}_PASSWORD": secrets.token_hex(16) for user in USERS},
        "REDIS_API_PASSWORD": password,
        "REDIS_ACL_FILE": str(tmp_path / "users.acl"),
    }
    done = subprocess.run(
        ["sh", str(START), "--port", "1"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "REDIS_API_PASSWORD" in done.stderr
    assert not (tmp_path / "users.acl").exists()
