"""The worker's Prometheus endpoint counts what its processes did."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from contact_sync.accounts.teams import create_team
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, create_app
from tests.brokers import BROKERS, broker_for
from tests.factories import call_event
from tests.services import free_port
from tests.workers import start_worker, stop_worker


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.slow
@pytest.mark.parametrize("kind", BROKERS)
def test_the_worker_serves_event_counters_and_queue_depth(
    request: pytest.FixtureRequest, kind: str, pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    broker = broker_for(request, kind, redis_db=9).url
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Metrics")
    port = free_port()
    worker = start_worker(
        postgres_url,
        broker,
        tmp_path / "worker.log",
        concurrency=2,
        wait_ready=False,
        extra_args=("--metrics-port", str(port)),
    )
    try:
        app = create_app(Settings(broker_url=broker))
        event = call_event(
            team.id,
            event_id="evt_metrics_1",
            call_id="call_1",
            phone="+12025550123",
            occurred_at=datetime.now(UTC).isoformat(),
        )
        for _ in range(2):  # the second delivery is a duplicate
            app.send_task(TASK_APPLY, args=[event], queue=QUEUE)
        app.send_task(TASK_APPLY, args=[{"not": "an event"}], queue=QUEUE)
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            try:
                text = _scrape(port)
            except OSError:
                text = ""
            if (
                'contact_sync_events_total{outcome="applied"} 1.0' in text
                and 'contact_sync_events_total{outcome="duplicate"} 1.0' in text
                and 'contact_sync_events_total{outcome="dead_lettered"} 1.0' in text
            ):
                break
            time.sleep(0.2)
        assert 'contact_sync_events_total{outcome="applied"} 1.0' in text
        assert 'contact_sync_events_total{outcome="duplicate"} 1.0' in text
        assert 'contact_sync_events_total{outcome="dead_lettered"} 1.0' in text
        assert 'contact_sync_queue_depth{queue="contact_sync.events"} 0.0' in text
        assert "contact_sync_apply_seconds_count" in text
        assert worker.poll() is None
    finally:
        stop_worker(worker)


def _answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _metrics_worker(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path, *args: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A worker serving metrics, with its temporary files in a folder of the test's own."""
    broker = broker_for(request, "redis", redis_db=9).url
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir(parents=True)
    worker = start_worker(
        postgres_url,
        broker,
        tmp_path / "worker.log",
        extra_args=("--metrics-port", str(port), *args),
        TMPDIR=str(tmp),
    )
    return worker, port, tmp


@pytest.mark.slow
def test_worker_metrics_are_served_on_loopback_only_unless_a_host_is_given(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> None:
    # 127.0.0.2 is loopback too: a server bound to every interface answers there,
    # one bound to 127.0.0.1 does not.
    worker, port, _ = _metrics_worker(request, postgres_url, tmp_path / "default")
    try:
        deadline = time.monotonic() + 30
        while not _answers("127.0.0.1", port):
            assert time.monotonic() < deadline, "the metrics never answered on 127.0.0.1"
            time.sleep(0.1)
        assert not _answers("127.0.0.2", port)
    finally:
        stop_worker(worker)

    worker, port, _ = _metrics_worker(
        request, postgres_url, tmp_path / "all", "--metrics-host", "0.0.0.0"
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers("127.0.0.2", port):
            assert time.monotonic() < deadline, "--metrics-host 0.0.0.0 was not honoured"
            time.sleep(0.1)
    finally:
        stop_worker(worker)


@pytest.mark.slow
def test_a_worker_removes_its_metrics_folder_when_it_stops(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> None:
    worker, _, tmp = _metrics_worker(request, postgres_url, tmp_path, "--concurrency", "2")
    try:
        [folder] = tmp.glob("contact-sync-metrics-*")
        assert folder.is_dir()
    finally:
        stop_worker(worker)
    assert worker.returncode == 0
    assert list(tmp.iterdir()) == []


def _scrape_until(port: int, *wanted: str) -> str:
    """The worker's metrics once they show every line of ``wanted`` (or after 60 s)."""
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        try:
            text = _scrape(port)
        except OSError:
            text = ""
        if all(line in text for line in wanted):
            break
        time.sleep(0.2)
    return text


@pytest.mark.slow
def test_messages_parked_before_a_task_runs_count_as_dead_lettered_and_stay_open(
    request: pytest.FixtureRequest, pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    broker = broker_for(request, "redis", redis_db=9)
    port = free_port()
    worker = start_worker(
        postgres_url, broker.url, tmp_path / "worker.log", extra_args=("--metrics-port", str(port))
    )
    try:
        broker.push(b"\xff\xfe not JSON")  # undecodable body
        broker.push_task([{"event_id": "x"}], task="contact_sync.no_such_task")  # unknown task
        broker.push_task([{"not": "an event"}])  # parked by the task: counted there
        text = _scrape_until(
            port,
            'contact_sync_events_total{outcome="dead_lettered"} 3.0',
            'contact_sync_dead_letters_open{reason="invalid_payload"} 3.0',
        )
        assert 'contact_sync_events_total{outcome="dead_lettered"} 3.0' in text, text
        assert 'contact_sync_dead_letters_open{reason="invalid_payload"} 3.0' in text, text
        assert 'contact_sync_dead_letters_open{reason="poison_message"} 0.0' in text
        assert worker.poll() is None
    finally:
        stop_worker(worker)
