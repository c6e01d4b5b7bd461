"""Small API hardening (docs/design.md §7, §16): what a review found the API accepting or logging.

- Access logs carry the path without its query string (searches carry names, phones,
  emails); a client that hangs up mid-upload is one log line, not a traceback.
- A body naming another team is 403 in either spelling, also when the other is null.
- Query parameters are read in the form the OpenAPI document gives them and no other:
  integers in ASCII digits (``limit=1.0`` is 422), times of day as ``HH:MM``,
  date-times as RFC 3339, slugs by their pattern.

The logging tests run ``contact-sync api`` as a real process and read its output.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.api import create_app
from contact_sync.db.tables import companies, contacts
from contact_sync.settings import Settings
from tests.services import free_port
from tests.test_api import (
    COMPANIES,
    CONTACTS,
    ELIGIBLE,
    Api,
    _api,
    _client,
    assert_error,
    assert_validation_error,
)
from tests.workers import run_cli

AT = "2026-11-20T15:00:00Z"


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


# ------------------------------------------------------------------- logs of a real server
@dataclass(frozen=True)
class Server:
    base_url: str
    api_key: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The log's lines, each a JSON object."""
        return [json.loads(line) for line in self.log_text().splitlines()]

    def wait_for_log(self, text: str, *, also_stop_at: str = "Traceback") -> str:
        """The log once it holds ``text`` (or ``also_stop_at``), polled for up to 30 s."""
        deadline = time.monotonic() + 30
        while True:
            log = self.log_text()
            if text in log or also_stop_at in log or time.monotonic() > deadline:
                return log
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[Server]:
    """``contact-sync api`` on a SQLite file, its output (stdout and stderr) in a file."""
    with tempfile.TemporaryDirectory(prefix="contact-sync-hardening-") as tmp:
        env = {
            **os.environ,
            "CONTACT_SYNC_DATABASE_URL": f"sqlite:///{Path(tmp) / 'api.sqlite3'}",
            "CONTACT_SYNC_BROKER_URL": redis_url,
        }
        run_cli(env, "migrate")
        api_key = json.loads(run_cli(env, "teams", "create", "--name", "Log Lines"))["api_key"]
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
            yield Server(base_url, api_key, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


pytest_slow = pytest.mark.slow


@pytest_slow
def test_access_log_lines_carry_the_path_without_the_query_string(server: Server) -> None:
    params = {"search": "ada.lovelace@example.com", "leadStatus": "qualified", "limit": "7"}
    response = httpx.get(
        f"{server.base_url}{CONTACTS}",
        params=params,
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert response.status_code == 200
    httpx.get(f"{server.base_url}/healthz?probe=kubelet-secret")
    log = server.wait_for_log('"message": "GET /healthz 200"')
    access = [r for r in server.records() if r["logger"] == "contact_sync.access"]
    assert {(r["path"], r["status"]) for r in access} >= {(CONTACTS, 200), ("/healthz", 200)}, log
    for leaked in ("ada.lovelace", "example.com", "qualified", "limit=", "kubelet-secret", "?"):
        assert leaked not in log, f"{leaked!r} in the log:\n{log}"


@pytest_slow
def test_a_client_that_hangs_up_mid_upload_is_one_log_line_without_a_traceback(
    server: Server,
) -> None:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {CONTACTS} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {server.api_key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            ).encode()
            + b'{"firstName": "Ada", "notes": "secret'
            + b"x" * 20_000
        )
        time.sleep(0.5)  # the request reached the route, which waits for the rest
    line = f"client disconnected before its request body was read: POST {CONTACTS}"
    log = server.wait_for_log(line)
    assert "Traceback" not in log, log
    assert "ClientDisconnect" not in log, log
    assert [r["message"] for r in server.records() if "disconnected" in r["message"]] == [line], log
    assert "secret" not in log


def test_a_client_that_hangs_up_mid_body_leaves_one_log_record_and_no_exception(
    engine: Engine, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(database_url="sqlite://", api_rate_limit_per_second=0), engine=engine)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"firstName": "Ada"', "more_body": True},
        {"type": "http.disconnect"},
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CONTACTS,
        "raw_path": CONTACTS.encode(),
        "query_string": b"",  # an undocumented parameter is a 422 before the body is read
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {api.key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"1000"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(_: dict[str, Any]) -> None:
        return None

    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))  # raised ClientDisconnect before
    # Besides the request's access line (api/observe.py):
    records = [
        r
        for r in caplog.records
        if r.name.startswith("contact_sync") and r.name != "contact_sync.access"
    ]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("INFO", f"client disconnected before its request body was read: POST {CONTACTS}")
    ]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 0


# ----------------------------------------------------------------------- another team
OTHER_TEAM_BODIES = [
    pytest.param(
        lambda mine, other: {"teamId": None, "team_id": other}, id="camel-null-snake-other"
    ),
    pytest.param(
        lambda mine, other: {"teamId": other, "team_id": None}, id="camel-other-snake-null"
    ),
    pytest.param(
        lambda mine, other: {"teamId": mine, "team_id": other}, id="camel-mine-snake-other"
    ),
    pytest.param(
        lambda mine, other: {"teamId": other, "team_id": mine}, id="camel-other-snake-mine"
    ),
    pytest.param(lambda mine, other: {"team_id": other}, id="snake-other"),
]


@pytest.mark.parametrize("naming", OTHER_TEAM_BODIES)
def test_a_company_or_contact_body_naming_another_team_in_either_spelling_is_403(
    api: Api, naming: Any
) -> None:
    # B's key, naming A's team: as the review did.
    teams = naming(api.other_team.id, api.team.id)
    with api.engine.connect() as conn:
        before = [
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (companies, contacts)
        ]
    company = api.post(COMPANIES, {"name": "Shadow Co", **teams}, key=api.other_key)
    assert_error(company, 403, "This API key does not belong to that team")
    contact = api.post(
        CONTACTS, {"firstName": "Ada", "lastName": "Lovelace", **teams}, key=api.other_key
    )
    assert_error(contact, 403, "This API key does not belong to that team")
    with api.engine.connect() as conn:
        after = [
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (companies, contacts)
        ]
    assert after == before


def test_a_body_naming_its_own_team_in_both_spellings_is_accepted(api: Api) -> None:
    teams = {"teamId": api.team.id, "team_id": None}
    assert api.post(COMPANIES, {"name": "Own Co", **teams}).status_code == 201
    assert (
        api.post(
            COMPANIES, {"name": "Own Co 2", "teamId": None, "team_id": api.team.id}
        ).status_code
        == 201
    )


# ---------------------------------------------------------- query parameters, as documented
NOT_A_CLOCK = [
    "+9:+0",
    " 9: 0",
    "٠٩:٠٠",
    "۰۹:۰۰",
    "０９:００",
    "9:00",
    "09:0",
    "09:00\n",
    "09.00",
    "09:00:00",
    "24:00",
]


@pytest.mark.parametrize("value", NOT_A_CLOCK, ids=ascii)
def test_a_window_outside_its_hh_mm_pattern_is_422(api: Api, value: str) -> None:
    for name, field in (
        ("windowStart", "window_start"),
        ("window_start", "window_start"),
        ("windowEnd", "window_end"),
        ("window_end", "window_end"),
    ):
        response = api.get(ELIGIBLE, params={name: value, "at": AT})
        message = assert_validation_error(response, field)
        assert message == "Must be a time of day as HH:MM"


@pytest.mark.parametrize("value", ["00:00", "09:30", "23:59"])
def test_a_window_in_its_pattern_is_accepted(api: Api, value: str) -> None:
    response = api.get(ELIGIBLE, params={"windowStart": value, "windowEnd": value, "at": AT})
    assert response.status_code == 200, response.text


NOT_AN_INTEGER = ["1.0", "1.", "+1", " 1", "1 ", "1_0", "١", "１", "1e1", "0x1", "", "one"]
INTEGER_PARAMETERS = [(CONTACTS, "limit"), (CONTACTS, "offset"), (ELIGIBLE, "limit")]


@pytest.mark.parametrize("value", NOT_AN_INTEGER, ids=ascii)
@pytest.mark.parametrize(("url", "name"), INTEGER_PARAMETERS, ids=lambda x: str(x).rsplit("/")[-1])
def test_an_integer_parameter_spelled_any_other_way_than_digits_is_422(
    api: Api, url: str, name: str, value: str
) -> None:
    response = api.get(url, params={name: value})
    assert assert_validation_error(response, name) == "Must be a whole number such as 50"
    assert set(response.json()["details"]) == {name}


@pytest.mark.parametrize(("url", "name"), INTEGER_PARAMETERS, ids=lambda x: str(x).rsplit("/")[-1])
def test_an_integer_parameter_in_digits_is_accepted(api: Api, url: str, name: str) -> None:
    assert api.get(url, params={name: "7"}).status_code == 200
    assert api.get(url, params={name: "07"}).status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        "1763650800",  # a Unix time
        "2026-11-20 15:00:00Z",
        "2026-11-20T15:00Z",
        "2026-11-20T15:00:00+0000",
        "2026-11-20T15:00:00",
        "２026-11-20T15:00:00Z",
    ],
    ids=ascii,
)
def test_at_other_than_an_rfc_3339_date_time_is_422(api: Api, value: str) -> None:
    assert_validation_error(api.get(ELIGIBLE, params={"at": value}), "at")
    contact = api.create(phone="+1 202 555 0100")
    eligibility = f"{CONTACTS}/{contact['id']}/eligibility"
    assert_validation_error(api.get(eligibility, params={"at": value}), "at")


@pytest.mark.parametrize(
    "value", ["2026-11-20T15:00:00Z", "2026-11-20t15:00:00z", "2026-11-20T10:00:00.25-05:00"]
)
def test_at_as_an_rfc_3339_date_time_is_accepted(api: Api, value: str) -> None:
    assert api.get(ELIGIBLE, params={"at": value}).status_code == 200
    contact = api.create(phone="+1 202 555 0100")
    eligibility = api.get(f"{CONTACTS}/{contact['id']}/eligibility", params={"at": value})
    assert eligibility.status_code == 200
    assert eligibility.json()["at"].startswith("2026-11-20T15:00:00")  # the same instant, UTC


@pytest.mark.parametrize(
    "value", [" qualified", "qualified\t", "Qualified!", "quälified"], ids=ascii
)
def test_a_lead_status_filter_outside_its_pattern_is_422(api: Api, value: str) -> None:
    assert_validation_error(api.get(CONTACTS, params={"leadStatus": value}), "lead_status")
