"""`contact-sync api` as a real process, spoken to over a socket.

The in-process tests (test_api.py) cover the behaviour; this one checks that the
command line starts a real uvicorn server on the configured database, that a team
and key made by `contact-sync teams create` work against it, and that it stops
cleanly when terminated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.services import free_port
from tests.workers import run_cli

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Server:
    base_url: str
    team_id: str
    api_key: str


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="contact-sync-api-") as tmp:
        if request.param == "sqlite":
            database_url = f"sqlite:///{Path(tmp) / 'api.sqlite3'}"
        else:
            database_url = request.getfixturevalue("postgres_url")
        env = {
            **os.environ,
            "CONTACT_SYNC_DATABASE_URL": database_url,
            "CONTACT_SYNC_BROKER_URL": redis_url,
            # Small, so the 413 below comes back while the body still fits in
            # the socket buffers (no reset while the client is still writing).
            "CONTACT_SYNC_API_MAX_BODY_BYTES": "65536",
        }
        run_cli(env, "migrate")
        created = json.loads(run_cli(env, "teams", "create", "--name", "Socket Solar"))
        port = free_port()
        log_path = Path(tmp) / "api.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "contact_sync.cli.main", "api", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, f"the server exited:\n{log_path.read_text()}"
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"no /healthz in 30 s:\n{log_path.read_text()}"
                time.sleep(0.1)
            yield Server(base_url, created["team_id"], created["api_key"])
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        assert process.returncode is not None


def test_the_api_command_serves_create_list_and_get_over_a_socket(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/readyz").json()["status"] == "ok"
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/api/crm/contacts").status_code == 401

        created = client.post(
            "/api/crm/contacts",
            headers=headers,
            json={
                "firstName": "Ada",
                "lastName": "Lovelace",
                "phone": "(202) 555-1234",
                "leadStatus": "Qualified",
            },
        )
        assert created.status_code == 201, created.text
        contact = created.json()
        assert contact["team_id"] == server.team_id
        assert contact["phone"] == "+12025551234"
        assert created.headers["etag"] == '"1"'
        client.post(
            "/api/crm/contacts", headers=headers, json={"first_name": "Bob", "last_name": "B"}
        )

        listed = client.get(
            "/api/crm/contacts",
            headers=headers,
            params={"search": "202-555", "leadStatus": "qualified", "hasPhone": "true"},
        )
        assert listed.status_code == 200
        assert listed.json() == {"data": [contact], "total": 1, "limit": 50, "offset": 0}
        assert client.get("/api/crm/contacts", headers=headers).json()["total"] == 2

        got = client.get(f"/api/crm/contacts/{contact['id']}", headers=headers)
        assert got.status_code == 200
        assert got.json() == contact

        patched = client.patch(
            f"/api/crm/contacts/{contact['id']}",
            headers={**headers, "If-Match": '"1"'},
            json={"jobTitle": "Countess"},
        )
        assert patched.json()["version"] == 2
        stale = client.patch(
            f"/api/crm/contacts/{contact['id']}",
            headers={**headers, "If-Match": "1"},
            json={"jobTitle": "Analyst"},
        )
        assert stale.status_code == 412
        assert stale.json() == {"error": "Version mismatch", "current_version": 2}

        too_big = client.post(
            "/api/crm/contacts",
            headers=headers,
            json={"firstName": "A", "lastName": "B", "notes": "x" * 70_000},
        )
        assert too_big.status_code == 413
        assert too_big.json() == {"error": "Request body too large"}


def test_the_api_process_freezes_its_startup_objects_out_of_the_collector() -> None:
    # Full collections walked ~120,000 startup objects (50-80 ms) inside requests
    # (api/app.py); after the app's startup they are frozen, out of the collector's walk.
    script = (
        "import gc\n"
        "from fastapi.testclient import TestClient\n"
        "from contact_sync.api.app import create_app\n"
        "from contact_sync.settings import Settings\n"
        "assert gc.get_freeze_count() == 0\n"
        "app = create_app(Settings(database_url='sqlite:///' + __import__('tempfile').mktemp()))\n"
        "with TestClient(app) as client:\n"
        "    assert client.get('/healthz').status_code == 200\n"
        "    print(gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    frozen, watched = map(int, done.stdout.split())
    assert frozen > 50_000
    assert watched < frozen / 2  # what a full collection still walks
