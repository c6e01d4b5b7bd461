"""``/readyz`` probes the broker once for many callers, and never starves the API.

Each call used to probe the database and the broker itself, on one of the
server's worker threads: with the broker down every call held a thread for
the probe's timeout, and a few dozen readiness checks left none for the API's
own requests (an authenticated list went from 19 ms to 1.7 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from contact_sync.accounts.teams import Team, issue_api_key
from contact_sync.api import create_app
from contact_sync.api.readiness import Readiness, broker_check
from contact_sync.settings import Settings

CALLERS = 45


@dataclass
class FakeBroker:
    """A TCP server that takes connections and never answers: a broker that hangs.

    With ``hang=False`` it closes each connection at once instead: a broker
    that fails fast. It counts the connections it was opened, which is how
    many times the broker was probed, whatever the probing code looks like.
    """

    listener: socket.socket
    hang: bool = True
    connections: list[socket.socket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    @property
    def opened(self) -> int:
        with self.lock:
            return len(self.connections)

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed by release()
                return
            with self.lock:
                self.connections.append(connection)
            if not self.hang:
                connection.close()

    def release(self) -> None:
        """Close everything: probes still waiting fail at once."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.listener.close()
        with self.lock:
            for connection in self.connections:
                connection.close()


@contextmanager
def fake_broker(*, hang: bool = True) -> Iterator[FakeBroker]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    broker = FakeBroker(listener, hang)
    threading.Thread(target=broker.serve, daemon=True).start()
    try:
        yield broker
    finally:
        broker.release()


def _settings(engine: Engine, broker_url: str, **settings: Any) -> Settings:
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        broker_url=broker_url,
        api_rate_limit_per_second=0,
        **settings,
    )


def _wait_for(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_concurrent_readyz_calls_share_one_probe_and_leave_the_api_its_threads(
    pg_engine: Engine, pg_team: Team
) -> None:
    with pg_engine.begin() as conn:
        key = issue_api_key(conn, team_id=pg_team.id).api_key
    with fake_broker() as broker:
        broker_check(broker.url)  # what one probe of a hanging broker opens
        one_probe = broker.opened
        assert one_probe >= 1

        app = create_app(_settings(pg_engine, broker.url), engine=pg_engine)
        answers: list[httpx.Response] = []
        with TestClient(app) as client:
            callers = [
                threading.Thread(target=lambda: answers.append(client.get("/readyz")))
                for _ in range(CALLERS)
            ]
            for caller in callers:
                caller.start()
            _wait_for(lambda: broker.opened > one_probe)  # the callers' probe is running

            # An authenticated list while every readiness call waits on the broker.
            listed: list[httpx.Response] = []
            lister = threading.Thread(
                target=lambda: listed.append(
                    client.get("/api/crm/contacts", headers={"Authorization": f"Bearer {key}"})
                )
            )
            lister.start()
            lister.join(timeout=30)
            served_while_waiting = not lister.is_alive()
            probed = broker.opened - one_probe
            broker.release()
            for caller in [*callers, lister]:
                caller.join(timeout=60)

    assert served_while_waiting, "the list waited for the readiness calls' threads"
    assert [response.status_code for response in listed] == [200]
    assert len(answers) == CALLERS
    assert {response.status_code for response in answers} == {503}
    assert all(r.json()["checks"]["broker"].startswith("unreachable") for r in answers)
    assert probed == one_probe, "each readiness call probed the broker itself"


def test_readyz_answers_from_its_cache_while_it_is_fresh(pg_engine: Engine) -> None:
    with fake_broker(hang=False) as broker:
        broker_check(broker.url)
        one_probe = broker.opened
        app = create_app(
            _settings(pg_engine, broker.url, api_readyz_cache_seconds=3600), engine=pg_engine
        )
        with TestClient(app) as client:
            answers = [client.get("/readyz") for _ in range(5)]
        assert [response.status_code for response in answers] == [503] * 5
        assert broker.opened == 2 * one_probe


def test_a_readiness_probe_is_shared_by_every_caller_that_comes_while_it_runs() -> None:
    started, release = threading.Event(), threading.Event()
    probes: list[int] = []

    def probe() -> tuple[bool, dict[str, Any]]:
        probes.append(1)
        started.set()
        release.wait(30)
        return True, {"status": "ok"}

    readiness = Readiness(probe, ttl=0)  # no cache: only the running probe is shared

    async def callers() -> list[tuple[bool, dict[str, Any]]]:
        waiting = [asyncio.ensure_future(readiness.answer()) for _ in range(CALLERS)]
        await asyncio.sleep(0)  # every caller has asked and awaits
        assert started.wait(30)
        release.set()
        return await asyncio.gather(*waiting)

    answers = asyncio.run(callers())
    assert answers == [(True, {"status": "ok"})] * CALLERS
    assert len(probes) == 1
    release.clear()
    release.set()
    assert asyncio.run(readiness.answer()) == (True, {"status": "ok"})
    assert len(probes) == 2  # expired (ttl 0): the next call probes again
