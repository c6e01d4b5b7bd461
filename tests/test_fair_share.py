"""Fair share (docs/design.md §16): one tenant cannot slow or crowd out the others.

- Request bodies are parsed and validated in worker threads, never on the event loop
  that answers everyone (checked structurally: which thread runs the parser).
- A 422 lists at most 50 fields and counts the rest.
- Each API key has a token bucket (per-team limits); an empty bucket is 429 with
  ``Retry-After``. Buckets live in Redis (this run's private server) when the broker is
  Redis, else in the process.

``bench/api_fairness.py`` measures the first point against a real server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team, create_team, issue_api_key
from contact_sync.api import create_app
from contact_sync.api import params as api_params
from contact_sync.api.rate_limit import KEY_PREFIX
from contact_sync.contacts.model import parse_create, parse_patch
from contact_sync.db.tables import contacts
from contact_sync.settings import RateLimit, Settings
from tests.factories import make_contact

CONTACTS = "/api/crm/contacts"
JSON = {"Content-Type": "application/json"}


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _key(engine: Engine, team: Team) -> tuple[str, str]:
    with engine.begin() as conn:
        issued = issue_api_key(conn, team_id=team.id)
    return issued.api_key, issued.key_id


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ------------------------------------------------------------------ parsing off the loop
def _threads_running(codes: dict[CodeType, str], send: Any) -> dict[str, set[int]]:
    """``{name: thread idents}`` of each function of ``codes`` called while ``send`` runs."""
    seen: dict[str, set[int]] = {name: set() for name in codes.values()}

    def profile(frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code in codes:
            seen[codes[frame.f_code]].add(threading.get_ident())

    # New threads (the worker threads of this event loop) and this one, which runs the loop.
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        asyncio.run(send())
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return seen


def test_a_request_body_is_parsed_and_validated_off_the_event_loop(
    pg_engine: Engine, pg_team: Team
) -> None:
    key, _ = _key(pg_engine, pg_team)
    contact = make_contact(pg_engine, pg_team.id)
    app = create_app(
        Settings(database_url=_url(pg_engine), api_rate_limit_per_second=0), engine=pg_engine
    )
    loop_thread = threading.get_ident()
    # An escaped emoji: the body is walked for NUL and lone surrogates too.
    body = json.dumps({"firstName": "Ada \U0001f600", "lastName": "Lovelace"})
    statuses: list[int] = []

    async def send() -> None:  # nothing here parses JSON on the loop itself
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            headers = {**_auth(key), **JSON}
            for method, url in (("POST", CONTACTS), ("PATCH", f"{CONTACTS}/{contact.id}")):
                response = await client.request(method, url, content=body, headers=headers)
                statuses.append(response.status_code)
            bad = await client.post(CONTACTS, content=b'{"firstName": ', headers=headers)
            statuses.append(bad.status_code)

    seen = _threads_running(
        {
            json.loads.__code__: "json.loads",
            api_params._bad_text.__code__: "the walk over the body's text",
            parse_create.__code__: "create validation",
            parse_patch.__code__: "patch validation",
        },
        send,
    )
    assert statuses == [201, 200, 422]
    for name, threads in seen.items():
        assert threads, f"{name} never ran"
        assert loop_thread not in threads, f"{name} ran on the event loop's thread"


# --------------------------------------------------------------------- capped 422 details
@pytest.fixture
def client(engine: Engine, team: Team) -> Iterator[tuple[TestClient, str]]:
    """An app without rate limits, and a key of ``team``."""
    settings = Settings(database_url=_url(engine), api_rate_limit_per_second=0)
    key, _ = _key(engine, team)
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield test_client, key


def _many_unknown_keys(count: int) -> bytes:
    """A contact body with ``count`` unknown short keys (100,000 fit under 1 MiB)."""
    unknown = {f"{i:x}": 0 for i in range(count)}
    return json.dumps(
        {"firstName": "A", "lastName": "B", **unknown}, separators=(",", ":")
    ).encode()


def test_a_body_of_100k_unknown_keys_gets_a_small_422_naming_50_and_counting_the_rest(
    engine: Engine, client: tuple[TestClient, str]
) -> None:
    test_client, key = client
    raw = _many_unknown_keys(100_000)
    assert len(raw) < 1_048_576
    response = test_client.post(CONTACTS, content=raw, headers={**_auth(key), **JSON})
    assert response.status_code == 422
    assert len(response.content) < 5_000
    body = response.json()
    assert body["error"] == "Validation failed"
    assert body["details"] == {f"{i:x}": "Unknown field" for i in range(50)}
    assert body["details_omitted"] == 100_000 - 50
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 0


@pytest.mark.parametrize("unknown", [51, 300])
def test_a_422_over_50_fields_lists_50_and_counts_the_rest_on_create_and_patch(
    client: tuple[TestClient, str], unknown: int
) -> None:
    test_client, key = client
    headers = {**_auth(key), **JSON}
    created = test_client.post(CONTACTS, json={"firstName": "A", "lastName": "B"}, headers=headers)
    fields = {f"x{i}": 1 for i in range(unknown)}
    for response in (
        test_client.post(
            CONTACTS, json={"firstName": "A", "lastName": "B", **fields}, headers=headers
        ),
        test_client.patch(f"{CONTACTS}/{created.json()['id']}", json=fields, headers=headers),
    ):
        assert response.status_code == 422
        body = response.json()
        assert list(body["details"]) == [f"x{i}" for i in range(50)]
        assert body["details_omitted"] == unknown - 50


def test_a_422_of_50_fields_or_fewer_lists_them_all_without_a_count(
    client: tuple[TestClient, str],
) -> None:
    test_client, key = client
    fields = {f"x{i}": 1 for i in range(50)}
    response = test_client.post(
        CONTACTS, json={"firstName": "A", "lastName": "B", **fields}, headers=_auth(key)
    )
    assert response.status_code == 422
    assert set(response.json()) == {"error", "details"}
    assert len(response.json()["details"]) == 50


def test_the_openapi_document_describes_the_count_and_the_429(
    client: tuple[TestClient, str],
) -> None:
    document = client[0].get("/openapi.json").json()
    error_body = document["components"]["schemas"]["ErrorBody"]["properties"]
    assert "details_omitted" in error_body
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            limited = operation["responses"].get("429")
            if path.startswith("/api/"):
                assert limited, f"{method} {path} documents no 429"
                assert "Retry-After" in limited["headers"]
            else:
                assert limited is None, f"{method} {path} is not limited"


# ------------------------------------------------------------------------- rate limits
@pytest.fixture(params=["redis", "memory"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Buckets in this run's Redis, or in the process (a broker that is not Redis)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return "filesystem://"


def _limited_client(engine: Engine, broker_url: str, **limits: Any) -> TestClient:
    settings = Settings(database_url=_url(engine), broker_url=broker_url, **limits)
    return TestClient(create_app(settings, engine=engine))


def _until_limited(client: TestClient, key: str, most: int) -> tuple[list[int], httpx.Response]:
    """Statuses of GETs with ``key`` until the first 429 (at most ``most``), and that answer."""
    statuses = []
    for _ in range(most):
        response = client.get(CONTACTS, headers=_auth(key))
        statuses.append(response.status_code)
        if response.status_code == 429:
            return statuses, response
    raise AssertionError(f"no 429 in {most} requests: {statuses}")


def test_a_key_may_send_its_burst_at_once_and_then_gets_429_with_retry_after(
    engine: Engine, team: Team, broker_url: str
) -> None:
    key, _ = _key(engine, team)
    # One token every 5 s: none comes back while the burst is sent.
    limits = {"api_rate_limit_per_second": 0.2, "api_rate_limit_burst": 3}
    with _limited_client(engine, broker_url, **limits) as client:
        statuses, limited = _until_limited(client, key, most=4)
        assert statuses == [200, 200, 200, 429]
        assert limited.json() == {"error": "Rate limit exceeded"}
        assert limited.headers["Retry-After"].isdigit()
        assert 1 <= int(limited.headers["Retry-After"]) <= 5
        # A limited request is refused before its body is read or parsed.
        refused = client.post(CONTACTS, content=b"{not json", headers={**_auth(key), **JSON})
        assert refused.status_code == 429


def test_a_limited_key_is_served_again_after_waiting_retry_after_seconds(
    engine: Engine, team: Team, broker_url: str
) -> None:
    key, _ = _key(engine, team)
    limits = {"api_rate_limit_per_second": 1, "api_rate_limit_burst": 2}
    with _limited_client(engine, broker_url, **limits) as client:
        statuses, limited = _until_limited(client, key, most=50)
        assert statuses[:2] == [200, 200]
        time.sleep(int(limited.headers["Retry-After"]))
        assert client.get(CONTACTS, headers=_auth(key)).status_code == 200


def test_each_key_has_its_own_bucket(
    engine: Engine, team: Team, other_team: Team, broker_url: str
) -> None:
    key, _ = _key(engine, team)
    second_key, _ = _key(engine, team)
    other_key, _ = _key(engine, other_team)
    limits = {"api_rate_limit_per_second": 0.2, "api_rate_limit_burst": 2}
    with _limited_client(engine, broker_url, **limits) as client:
        assert _until_limited(client, key, most=3)[0] == [200, 200, 429]
        assert _until_limited(client, second_key, most=3)[0] == [200, 200, 429]
        assert _until_limited(client, other_key, most=3)[0] == [200, 200, 429]


def test_a_team_override_replaces_the_default_limit_for_each_of_its_keys(
    engine: Engine, team: Team, other_team: Team, broker_url: str
) -> None:
    with engine.begin() as conn:
        unlimited_team = create_team(conn, name="Unlimited Umbrellas")
    key, _ = _key(engine, team)
    other_key, _ = _key(engine, other_team)
    unlimited_key, _ = _key(engine, unlimited_team)
    limits = {
        "api_rate_limit_per_second": 0.2,
        "api_rate_limit_burst": 2,
        "api_rate_limit_teams": {
            other_team.id: RateLimit(per_second=0.2, burst=5),
            unlimited_team.id: RateLimit(per_second=0, burst=1),
        },
    }
    with _limited_client(engine, broker_url, **limits) as client:
        assert _until_limited(client, key, most=3)[0] == [200] * 2 + [429]
        assert _until_limited(client, other_key, most=6)[0] == [200] * 5 + [429]
        for _ in range(20):
            assert client.get(CONTACTS, headers=_auth(unlimited_key)).status_code == 200


def test_routes_without_a_key_are_not_limited(engine: Engine, team: Team, broker_url: str) -> None:
    key, _ = _key(engine, team)
    limits = {"api_rate_limit_per_second": 0.2, "api_rate_limit_burst": 1}
    with _limited_client(engine, broker_url, **limits) as client:
        assert _until_limited(client, key, most=2)[0] == [200, 429]
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
            assert client.get("/openapi.json").status_code == 200
            assert client.get(CONTACTS).status_code == 401
            assert client.get(CONTACTS, headers=_auth("cs_wrong")).status_code == 401


def test_per_team_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTACT_SYNC_API_RATE_LIMIT_PER_SECOND", "5")
    monkeypatch.setenv(
        "CONTACT_SYNC_API_RATE_LIMIT_TEAMS", '{"team-1": {"per_second": 100, "burst": 200}}'
    )
    settings = Settings()
    assert settings.api_rate_limit_per_second == 5
    assert settings.api_rate_limit_burst == 40
    assert settings.api_rate_limit_teams == {"team-1": RateLimit(per_second=100, burst=200)}


def test_every_api_process_counts_against_the_same_bucket_in_redis(
    engine: Engine, team: Team, redis_url: str
) -> None:
    key, key_id = _key(engine, team)
    limits = {"api_rate_limit_per_second": 0.2, "api_rate_limit_burst": 2}
    with (
        _limited_client(engine, redis_url, **limits) as first,
        _limited_client(engine, redis_url, **limits) as second,
    ):
        assert first.get(CONTACTS, headers=_auth(key)).status_code == 200
        assert second.get(CONTACTS, headers=_auth(key)).status_code == 200
        assert first.get(CONTACTS, headers=_auth(key)).status_code == 429
        assert second.get(CONTACTS, headers=_auth(key)).status_code == 429
    bucket = f"{KEY_PREFIX}{key_id}"
    client = redis.Redis.from_url(redis_url)
    assert client.exists(bucket)
    # Expires once full again (2 tokens at 0.2 a second: 10 s, and a second more).
    assert 0 < client.pttl(bucket) <= 11_000


def test_while_redis_does_not_answer_the_process_keeps_its_own_buckets(
    engine: Engine, team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    key, _ = _key(engine, team)
    limits = {"api_rate_limit_per_second": 0.2, "api_rate_limit_burst": 2}
    # Port 1: nothing listens; the connection is refused at once.
    with _limited_client(engine, "redis://127.0.0.1:1/0", **limits) as client:
        assert _until_limited(client, key, most=3)[0] == [200, 200, 429]
    warnings = [r for r in caplog.records if "rate limits are kept in this process" in r.message]
    assert len(warnings) == 1
