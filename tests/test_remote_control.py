"""Remote control is opt-in, and the worker's health check does not need it.

Celery's remote control (``inspect``, ``revoke``, ``shutdown``,
``pool_restart``) is consumed from the broker, where any publisher can
broadcast (README, "Security"). Each test runs a worker of its own, so that
none of them is a worker another test stopped or paused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine

from contact_sync.accounts.teams import create_team
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import TASK_APPLY_BATCH, create_app
from tests.brokers import BROKERS, Broker
from tests.factories import QUEUE, task_envelope
from tests.test_queue_trust import (
    Worker,
    _seen,
    _settled,
    _start,
    _until,
    call_event,
    send,
    task_body,
    task_headers,
)
from tests.workers import stop_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def team_id(pg_engine: Engine) -> str:
    with pg_engine.begin() as conn:
        return create_team(conn, name="Controlled").id


def _control_app(broker: Broker) -> Celery:
    return create_app(Settings(broker_url=broker.url))


@pytest.fixture(params=BROKERS)
def own_worker(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> Iterator[Worker]:
    running = _start(request, request.param, postgres_url, tmp_path)
    yield running
    stop_worker(running.process)
    running.broker.close()


def test_without_remote_control_revoke_and_shutdown_broadcasts_do_nothing(
    own_worker: Worker, pg_engine: Engine, team_id: str
) -> None:
    # Before: a `revoke` broadcast made a batch message vanish, `shutdown` stopped the worker.
    worker, app = own_worker, _control_app(own_worker.broker)
    try:
        assert app.control.ping(timeout=2) == []
        revoked_id, event = str(uuid.uuid4()), call_event(team_id)
        assert app.control.revoke(revoked_id, reply=True, timeout=2) == []
        headers = {**task_headers(TASK_APPLY_BATCH), "id": revoked_id}
        send(worker.broker, task_body([[event]]), headers)
        _until(lambda: _seen(pg_engine, [event["event_id"]]), "the revoked batch to apply", worker)

        app.control.shutdown()
        app.control.broadcast("pool_restart", arguments={"reload": True})
        time.sleep(2)  # what a worker listening to them would have done by now
        _settled(worker, pg_engine, team_id)
        assert worker.process.poll() is None
    finally:
        app.close()


def test_remote_control_is_opt_in_with_a_flag_or_the_environment(
    request: pytest.FixtureRequest,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONTACT_SYNC_WORKER_REMOTE_CONTROL", raising=False)
    assert create_app(Settings()).conf.worker_enable_remote_control is False
    monkeypatch.setenv("CONTACT_SYNC_WORKER_REMOTE_CONTROL", "true")
    assert create_app(Settings()).conf.worker_enable_remote_control is True
    monkeypatch.delenv("CONTACT_SYNC_WORKER_REMOTE_CONTROL")
    worker = _start(request, "redis", postgres_url, tmp_path, "--remote-control")
    app = _control_app(worker.broker)
    try:
        assert _until(lambda: app.control.ping(timeout=2), "a ping's answer", worker)
    finally:
        app.close()
        stop_worker(worker.process)
        worker.broker.close()


def _health(worker: Worker, max_age: float) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "contact_sync.cli.main",
        "worker-health",
        "--max-age",
        str(max_age),
    ]
    env = {**os.environ, "CONTACT_SYNC_WORKER_HEARTBEAT_FILE": str(worker.heartbeat)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_worker_health_follows_the_consumers_heartbeat_without_remote_control(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> None:
    worker = _start(request, "redis", postgres_url, tmp_path)
    try:
        done = _health(worker, 30)
        assert (done.returncode, done.stdout.strip()) == (0, "healthy"), done.stderr
        os.kill(worker.process.pid, signal.SIGSTOP)  # a stuck main process
        try:
            stale = _until(lambda: _health(worker, 10).returncode == 1, "a stale beat", worker)
            assert stale
            assert "old" in _health(worker, 10).stderr
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
        _until(lambda: _health(worker, 10).returncode == 0, "the beat to resume", worker)
    finally:
        stop_worker(worker.process)
        worker.broker.close()
    gone = _health(worker, 30)
    assert gone.returncode == 1
    assert "no heartbeat file" in gone.stderr


# --- who may write to the broker at all (README, "Security") --------------------------------

RAW_PUBLISHER_ACL = ("resetkeys", "~contact_sync.events", "resetchannels", "-@all", "+lpush")
PYTHON_PUBLISHER_ACL = (
    "resetkeys",
    "~contact_sync.events*",
    "~_kombu.binding*",
    "resetchannels",
    "-@all",
    *("+ping", "+multi", "+exec", "+llen", "+lpush", "+sadd"),
)


def test_redis_publisher_users_of_the_readme_may_send_events_and_do_nothing_else(
    redis_url: str,
) -> None:
    admin = redis.Redis.from_url(redis_url)
    base = urlsplit(redis_url)
    users = {"cs-raw-publisher": RAW_PUBLISHER_ACL, "cs-publisher": PYTHON_PUBLISHER_ACL}
    try:
        for user, rules in users.items():
            admin.execute_command("ACL", "SETUSER", user, "reset", "on", ">s3cret", *rules)
        url = f"redis://{{}}:s3cret@{base.hostname}:{base.port}/0"
        raw = redis.Redis.from_url(url.format("cs-raw-publisher"))
        assert raw.lpush(QUEUE, task_envelope([{"event_id": "evt_acl"}])) >= 1
        python = subprocess.run(
            [
                sys.executable,
                "-c",
                "from contact_sync.worker.publisher import publish_event as p; "
                "from tests.factories import call_event as e; p(e('team', phone='+12025550123'))",
            ],
            env={**os.environ, "CONTACT_SYNC_BROKER_URL": url.format("cs-publisher")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert python.returncode == 0, python.stderr
        assert admin.llen(QUEUE) == 2
        python_user = redis.Redis.from_url(url.format("cs-publisher"))
        for client in (raw, python_user):
            for refused in (
                lambda c: c.lrange(QUEUE, 0, -1),  # read others' events
                lambda c: c.delete(QUEUE),
                lambda c: c.hgetall("unacked"),
                lambda c: c.lpush("elsewhere", "x"),
                lambda c: c.publish("/0.celery.pidbox", "x"),  # remote control on Redis
                lambda c: c.flushdb(),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    refused(client)
            client.close()
    finally:
        admin.delete(QUEUE)
        admin.execute_command("ACL", "DELUSER", *users)
        admin.close()
