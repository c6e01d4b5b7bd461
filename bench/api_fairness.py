"""Fair share: how much one client posting ~1 MiB bodies slows everyone else's requests.

Starts ``contact-sync api`` (one uvicorn process, as the CLI runs it) on a fresh SQLite
file (or ``--database-url``), then measures ``GET /healthz`` from one thread:

1. alone, for ``--seconds``;
2. while another thread posts ~1 MiB bodies back to back to ``POST /api/crm/contacts``
   with a valid key, for ``--seconds``.

and prints p50/p95/max of ``/healthz`` in both phases, with the posts' rate and status
codes. Before the parsing left the event loop, each body held the loop for the whole of its
JSON parse and walk, and ``/healthz`` queued behind it. Bodies (``--body``):

- ``keys``: an object of ~100,000 short unknown keys (422 naming the first 50 of them);
- ``tags``: a contact whose ``tags`` list holds ~60,000 strings (422 on ``tags``);
- ``fields``: a valid contact with 200 custom fields (201; a small body, for comparison).

The per-key rate limit is switched off for the server (``CONTACT_SYNC_API_RATE_LIMIT_PER_SECOND=0``)
so that the figures show the parsing alone. Run from the repository root::

    .venv/bin/python bench/api_fairness.py
    .venv/bin/python bench/api_fairness.py --body tags --seconds 20

To measure another checkout's code, put its ``src`` first on ``PYTHONPATH``: the server
process inherits it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"contact-sync {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def body_of(kind: str) -> bytes:
    """A request body of ``kind``, just under the 1 MiB limit (``fields`` is small)."""
    if kind == "keys":
        keys: dict[str, int] = {}
        i = 0
        while True:
            keys[f"{i:x}"] = 0
            i += 1
            if i % 1000 == 0 and len(json.dumps(keys, separators=(",", ":"))) > MIB - 20_000:
                break
        raw = json.dumps(keys, separators=(",", ":"))
    elif kind == "tags":
        tags = [f"t{i}" for i in range(150_000)]
        while len(json.dumps({"firstName": "A", "lastName": "B", "tags": tags})) > MIB - 1000:
            tags = tags[: len(tags) * 9 // 10]
        raw = json.dumps({"firstName": "A", "lastName": "B", "tags": tags})
    elif kind == "fields":
        fields = {f"field_{i}": f"value {i}" for i in range(200)}
        raw = json.dumps({"firstName": "A", "lastName": "B", "customFields": fields})
    else:
        raise SystemExit(f"unknown body kind {kind}")
    return raw.encode()


@contextmanager
def api_server(database_url: str | None) -> Iterator[tuple[str, str]]:
    """``(base_url, api_key)`` of a fresh ``contact-sync api`` process."""
    with tempfile.TemporaryDirectory(prefix="contact-sync-fairness-") as tmp:
        env = {
            **os.environ,
            "CONTACT_SYNC_DATABASE_URL": database_url or f"sqlite:///{Path(tmp) / 'api.sqlite3'}",
            # No broker is needed; the limiter is off (see the module docstring).
            "CONTACT_SYNC_BROKER_URL": "memory://",
            "CONTACT_SYNC_API_RATE_LIMIT_PER_SECOND": "0",
        }
        _cli(env, "migrate")
        api_key = json.loads(_cli(env, "teams", "create", "--name", "Fairness"))["api_key"]
        port = _free_port()
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
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"the server exited:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"no /healthz in 60 s:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield base_url, api_key
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def sample_healthz(base_url: str, seconds: float, pause: float = 0.01) -> list[float]:
    """Latencies (ms) of ``/healthz``, one request every ``pause`` s on one connection."""
    latencies = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.get("/healthz")  # connect first: the first sample is not a TCP handshake
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            response = client.get("/healthz")
            latencies.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text
            time.sleep(pause)
    return latencies


def post_until(
    base_url: str, api_key: str, body: bytes, stop: threading.Event, statuses: Counter[int]
) -> None:
    """Post ``body`` back to back until ``stop`` is set, counting status codes."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while not stop.is_set():
            response = client.post("/api/crm/contacts", content=body, headers=headers)
            statuses[response.status_code] += 1


def summary(latencies: list[float]) -> str:
    """``p50 / p95 / max`` in ms, and the sample count."""
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"p50 {statistics.median(ordered):6.1f} ms  p95 {p95:6.1f} ms  "
        f"max {ordered[-1]:6.1f} ms  (n={len(ordered)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", choices=("keys", "tags", "fields"), default="keys")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()

    body = body_of(args.body)
    with api_server(args.database_url) as (base_url, api_key):
        alone = sample_healthz(base_url, args.seconds)
        stop = threading.Event()
        statuses: Counter[int] = Counter()
        poster = threading.Thread(
            target=post_until, args=(base_url, api_key, body, stop, statuses), daemon=True
        )
        started = time.monotonic()
        poster.start()
        try:
            time.sleep(0.5)  # the first body is in flight
            loaded = sample_healthz(base_url, args.seconds)
        finally:
            stop.set()
            poster.join(timeout=120)
        elapsed = time.monotonic() - started
    posts = sum(statuses.values())
    print(f"body: {args.body}, {len(body):,} bytes")
    print(f"/healthz alone:          {summary(alone)}")
    print(f"/healthz under the load: {summary(loaded)}")
    codes = ", ".join(f"{code}×{n}" for code, n in sorted(statuses.items()))
    print(f"posts: {posts} in {elapsed:.1f} s ({posts / elapsed:.1f}/s; {codes})")


if __name__ == "__main__":
    main()
