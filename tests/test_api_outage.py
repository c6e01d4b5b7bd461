"""A database outage is a 503 from the API, never a 500 (issue 12 item 7).

An unreachable database, one whose connections are cut, one that is stopped
and started again, and a pool with no connection to give: every route
answers ``503 {"error": "Database unavailable"}`` with ``Retry-After``, and the
API answers normally again as soon as the database is back. Round 1 answered
Starlette's text/plain ``Internal Server Error``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import create_team, issue_api_key
from contact_sync.api import create_app
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import upgrade
from contact_sync.settings import Settings

CLOSED_PORT_URL = "postgresql+psycopg://u:secret@127.0.0.1:1/x"
CONTACTS = "/api/crm/contacts"


def _settings(database_url: str, redis_url: str) -> Settings:
    return Settings(database_url=database_url, broker_url=redis_url, api_rate_limit_per_second=0)


def assert_outage_answer(response: httpx.Response) -> None:
    """The outage answer: 503, the JSON error body, and when to try again."""
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Database unavailable"}
    assert int(response.headers["Retry-After"]) >= 1


def _requests(client: TestClient) -> Iterator[tuple[str, str]]:
    """(method, path) for every operation of the OpenAPI document, path parameters filled in."""
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in sorted(paths.items()):
        for method in sorted(operations):
            yield method.upper(), re.sub(r"\{[^}]+\}", "ct_missing", path)


def _send(client: TestClient, method: str, path: str) -> httpx.Response:
    headers = {"Authorization": "Bearer cs_not_checked_yet", "Content-Type": "application/json"}
    body = b"{}" if method in ("POST", "PATCH", "PUT") else None
    return client.request(method, path, headers=headers, content=body)


# --- a database that cannot be reached at all ---------------------------------------


@pytest.mark.parametrize(
    "url",
    [CLOSED_PORT_URL, "sqlite:////nonexistent-folder/contact_sync.sqlite3"],
    ids=["postgresql, a closed port", "sqlite, a file that cannot be opened"],
)
def test_every_route_answers_503_json_with_retry_after_when_the_database_is_unreachable(
    redis_url: str, url: str
) -> None:
    app = create_app(_settings(url, redis_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        requests = list(_requests(client))
        api_routes = [(m, p) for m, p in requests if p.startswith("/api/")]
        assert ("GET", CONTACTS) in api_routes
        assert ("PATCH", f"{CONTACTS}/ct_missing") in api_routes
        for method, path in requests:
            response = _send(client, method, path)
            if path.startswith("/api/"):
                assert_outage_answer(response)
            else:  # health, docs, the OpenAPI document: no 500 either
                assert response.status_code < 500 or path == "/readyz", (path, response.text)
        assert "secret" not in client.get("/readyz").text


def test_a_database_that_accepts_connections_but_never_answers_is_503_after_the_timeout(
    redis_url: str,
) -> None:
    """A black hole (a dead host, a firewall): libpq waited forever by default."""
    with ThreadPoolExecutor(1) as pool:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)  # the kernel completes the handshake; nobody ever answers
            port = silent.getsockname()[1]
            url = f"postgresql+psycopg://u:secret@127.0.0.1:{port}/x"
            client = TestClient(create_app(_settings(url, redis_url)))
            waiting = pool.submit(_send, client, "GET", CONTACTS)
            done, _ = wait([waiting], timeout=30)
        # Closing the listener resets a connection still waiting: the request ends either way.
        assert done, "the request still waited for the database after 30 s"
        assert_outage_answer(waiting.result())


def test_a_pool_that_gives_no_connection_in_time_is_503(
    pg_engine: Engine, postgres_url: str, redis_url: str
) -> None:
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Acme Solar")
        key = issue_api_key(conn, team_id=team.id).api_key
    url = make_url(postgres_url)
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    app = create_app(_settings(postgres_url, redis_url), engine=engine)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            auth = {"Authorization": f"Bearer {key}"}
            assert client.get(CONTACTS, headers=auth).status_code == 200
            with engine.connect():  # the pool's only connection, held elsewhere
                assert_outage_answer(client.get(CONTACTS, headers=auth))
            assert client.get(CONTACTS, headers=auth).status_code == 200
    finally:
        engine.dispose()


def test_a_database_error_that_is_not_an_outage_stays_a_500(
    postgres_url: str, redis_url: str
) -> None:
    """A bug must not pass for an outage: tables hidden by the search path are not one."""
    hidden = f"{postgres_url}?options=-csearch_path%3Dno_such_schema"
    app = create_app(_settings(hidden, redis_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = _send(client, "GET", CONTACTS)
    assert response.status_code == 500
    assert "Retry-After" not in response.headers


# --- a database that goes away while the API runs -------------------------------------


def test_connections_cut_by_the_server_are_503_once_then_the_api_recovers(
    pg_engine: Engine, postgres_url: str, redis_url: str
) -> None:
    """``pg_terminate_backend`` on the API's connections, with pool pre-ping off."""
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Acme Solar")
        key = issue_api_key(conn, team_id=team.id).api_key
    name = f"outage_{uuid.uuid4().hex[:10]}"
    url = make_url(postgres_url).update_query_dict({"application_name": name})
    engine = make_engine(url.render_as_string(hide_password=False), pre_ping=False)
    app = create_app(_settings(postgres_url, redis_url), engine=engine)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            auth = {"Authorization": f"Bearer {key}"}
            assert client.get(CONTACTS, headers=auth).status_code == 200
            admin = make_url(postgres_url).set(drivername="postgresql")
            with psycopg.connect(admin.render_as_string(hide_password=False)) as conn:
                cut = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE application_name = %s",
                    (name,),
                ).fetchone()
            assert cut is not None
            assert cut[0] >= 1
            assert_outage_answer(client.get(CONTACTS, headers=auth))
            statuses = [client.get(CONTACTS, headers=auth).status_code for _ in range(3)]
            assert set(statuses) <= {200, 503}, statuses
            assert statuses[-1] == 200, statuses
    finally:
        engine.dispose()


def _pg_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    found = candidates[-1] if candidates else shutil.which("pg_ctl")
    if found is None:
        pytest.fail("PostgreSQL server binaries (pg_ctl, initdb) are not installed")
    return Path(found).parent


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, to stop and start at will."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "postgres"
        self.data = self.dir / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.bin = _pg_bin()

    def _run(self, name: str, *args: str) -> None:
        command = [str(self.bin / name), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert result.returncode == 0, (name, result.stderr or result.stdout)

    def init(self) -> None:
        self.dir.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
            "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="contact-sync-outage-"))
    root.chmod(0o755)  # the postgres user must reach its folder inside
    server = PrivatePostgres(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_stopped_database_is_503_and_the_api_answers_again_once_it_is_back(
    private_postgres: PrivatePostgres, redis_url: str
) -> None:
    engine = make_engine(private_postgres.url)  # as ``contact-sync api`` makes it: pre-ping on
    upgrade(engine)
    with engine.begin() as conn:
        team = create_team(conn, name="Acme Solar")
        key = issue_api_key(conn, team_id=team.id).api_key
    app = create_app(_settings(private_postgres.url, redis_url), engine=engine)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            auth = {"Authorization": f"Bearer {key}"}
            created = client.post(CONTACTS, json={"firstName": "A", "lastName": "B"}, headers=auth)
            assert created.status_code == 201, created.text
            private_postgres.stop()
            for method, path in _requests(client):
                if path.startswith("/api/"):
                    response = _send(client, method, path)
                    assert_outage_answer(response)
            private_postgres.start()
            deadline = time.monotonic() + 60
            while (answer := client.get(CONTACTS, headers=auth)).status_code != 200:
                assert answer.status_code == 503, answer.text
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert answer.json()["total"] == 1
    finally:
        engine.dispose()
