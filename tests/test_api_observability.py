"""`contact-sync api` as a real process: its `/metrics` and its log lines.

Requests are counted and timed by route template (never the raw path: one
series per route, however many contacts), open dead letters are a gauge by
reason, and every line the server writes is JSON; access lines carry the
path without its query string and the caller's team, never the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.event import listen

from contact_sync.calls.events import Reason
from contact_sync.clock import utcnow
from contact_sync.db.engine import make_engine
from contact_sync.ops.dead_letters import record
from contact_sync.ops.metrics import OpenDeadLetters
from tests.services import free_port
from tests.workers import run_cli

SEARCH = "ada.secret@example.org"


def _json_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
    return records


def _samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of a Prometheus text page."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


@pytest.mark.slow
def test_the_api_serves_request_metrics_by_route_and_logs_json_access_lines(
    redis_url: str, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    env = {
        **os.environ,
        "CONTACT_SYNC_DATABASE_URL": database_url,
        "CONTACT_SYNC_BROKER_URL": redis_url,
        # One request a key, then 429s: /metrics, without a key, is never limited.
        "CONTACT_SYNC_API_RATE_LIMIT_PER_SECOND": "0.001",
        "CONTACT_SYNC_API_RATE_LIMIT_BURST": "3",
    }
    run_cli(env, "migrate")
    created = json.loads(run_cli(env, "teams", "create", "--name", "Observed"))
    engine = make_engine(database_url)
    with engine.begin() as conn:
        for event_id in ("evt_1", "evt_2"):
            record(
                conn,
                payload={"event_id": event_id},
                reason="contact_not_found",
                message="no such contact",
                event_id=event_id,
                team_id=created["team_id"],
                now=utcnow(),
            )
    engine.dispose()
    port = free_port()
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "contact_sync.cli.main", "api", "--port", str(port)],
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}"
    key = {"Authorization": f"Bearer {created['api_key']}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, err.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as client:
            listed = client.get("/api/crm/contacts", params={"search": SEARCH}, headers=key)
            assert listed.status_code == 200
            for _ in range(2):
                missing = client.get(f"/api/crm/contacts/{uuid.uuid4()}", headers=key)
                assert missing.status_code == 404
            assert client.get(f"/no/such/{uuid.uuid4()}").status_code == 404
            scrapes = [client.get("/metrics") for _ in range(5)]
    finally:
        process.terminate()
        process.wait(timeout=15)

    assert all(s.status_code == 200 for s in scrapes)
    assert scrapes[-1].headers["content-type"].startswith("text/plain")
    metrics = _samples(scrapes[-1].text)
    contact = "/api/crm/contacts/{contact_id}"
    assert (
        metrics[f'contact_sync_http_requests_total{{method="GET",route="{contact}",status="404"}}']
        == 2
    )
    assert (
        metrics[
            'contact_sync_http_requests_total{method="GET",route="/api/crm/contacts",status="200"}'
        ]
        == 1
    )
    assert (
        metrics['contact_sync_http_requests_total{method="GET",route="unmatched",status="404"}']
        == 1
    )
    assert (
        metrics[
            f'contact_sync_http_request_duration_seconds_count{{method="GET",route="{contact}"}}'
        ]
        == 2
    )
    assert metrics['contact_sync_dead_letters_open{reason="contact_not_found"}'] == 2
    assert metrics['contact_sync_dead_letters_open{reason="invalid_payload"}'] == 0
    routes = {name.split('route="')[1].split('"')[0] for name in metrics if 'route="' in name}
    assert routes <= {contact, "/api/crm/contacts", "unmatched", "/healthz", "/metrics"}

    records = _json_lines(out) + _json_lines(err)
    access = [r for r in records if r["logger"] == "contact_sync.access"]
    [search] = [r for r in access if r["route"] == "/api/crm/contacts"]
    assert search["path"] == "/api/crm/contacts"
    assert search["method"] == "GET"
    assert search["status"] == 200
    assert search["team_id"] == created["team_id"]
    assert search["duration_ms"] > 0
    [unmatched] = [r for r in access if r["route"] == "unmatched"]
    assert unmatched["status"] == 404
    assert unmatched["team_id"] is None
    text_of_logs = out.read_text() + err.read_text()
    assert SEARCH not in text_of_logs
    assert created["api_key"] not in text_of_logs


def _park(engine: Engine, event_id: str, reason: Reason) -> None:
    with engine.begin() as conn:
        record(
            conn,
            payload={"event_id": event_id},
            reason=reason,
            message="parked",
            event_id=event_id,
            team_id=None,
            now=utcnow(),
        )


def test_open_dead_letters_cost_one_grouped_query_per_cache_period(engine: Engine) -> None:
    statements: list[str] = []
    # Queries only (SQLite's connections also send BEGIN).
    listen(
        engine,
        "before_cursor_execute",
        lambda *args: statements.append(args[2]) if args[2].startswith("SELECT") else None,
    )
    now = [100.0]
    gauge = OpenDeadLetters(lambda: engine, cache_seconds=5, clock=lambda: now[0])
    _park(engine, "evt_a", "invalid_payload")
    statements.clear()

    def scrape() -> dict[str, float]:
        [family] = gauge.collect()
        return {sample.labels["reason"]: sample.value for sample in family.samples}

    first = scrape()
    assert first["invalid_payload"] == 1
    assert set(first) == set(get_args(Reason))  # a bounded label set, zeros included
    _park(engine, "evt_b", "invalid_payload")
    statements.clear()
    now[0] += 4.9
    assert scrape()["invalid_payload"] == 1  # from the cache
    assert statements == []
    now[0] += 0.1
    assert scrape()["invalid_payload"] == 2
    assert len(statements) == 1
    assert "GROUP BY" in statements[0]
