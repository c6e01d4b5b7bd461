"""HTTP benchmark: requests/s and p50/p99 of ``GET /api/crm/contacts`` with filters.

One ``contact-sync api`` process (one uvicorn worker, as the CLI runs it) on the PostgreSQL
database that ``bench/list_queries.py`` seeds (1M contacts in 100 teams), and a load
generator on 127.0.0.1 only:

1. a sequential pass (one keep-alive connection, httpx): the latency of each kind of list
   request without queueing;
2. a concurrent pass of the mixed requests: ``wrk`` (``apt-get install wrk``) with a few
   connections for a fixed time, or, without ``wrk``, httpx threads for a fixed number of
   requests. This gives the requests/s one worker sustains, and p50/p99 under that load.

Each request uses a random team and that team's key (one key per team is issued at the start
and deleted at the end), so the team filter is always on, as in production. Kinds: a first
page; by lead status; by company; callable (``doNotCall=false&hasPhone=true``); a name
search; a phone-digits search; a deep page (offset 200..2000).

Run from the repository root::

    /work/venv/bin/python bench/api_list.py                     # reuses contact_sync_bench
    /work/venv/bin/python bench/api_list.py --connections 16 --duration 30
    /work/venv/bin/python bench/api_list.py --database-url postgresql+psycopg://...

When the database holds no contacts, ``contact_sync_api_bench`` is seeded instead with
100,000 contacts in 10 teams by ``bench/list_queries.py``'s seeder (COPY), and the output
says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psycopg
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import issue_api_key
from contact_sync.db.engine import make_engine, safe_url
from contact_sync.db.tables import api_keys

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/contact_sync_bench"
FALLBACK_DATABASE = "contact_sync_api_bench"
FALLBACK_CONTACTS = 100_000
FALLBACK_TEAMS = 10
KINDS = ("page", "status", "company", "callable", "search-name", "search-phone", "deep-page")
STATUSES = ("new", "contacted", "qualified", "unqualified", "customer")


@dataclass(frozen=True)
class Request:
    kind: str
    path: str
    key: str


def _psycopg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _contact_count(url: str) -> int | None:
    """Contacts in the database behind ``url``; None when it or its schema is missing."""
    try:
        with psycopg.connect(_psycopg_dsn(url), connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM contacts").fetchone()
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return None
    return int(row[0]) if row else 0


def choose_database(url: str) -> tuple[str, str]:
    """The URL to benchmark and a line saying where its data came from."""
    count = _contact_count(url)
    if count:
        return url, f"reusing {safe_url(url)}: {count:,} contacts (seeded by list_queries.py)"
    fallback = make_url(url).set(database=FALLBACK_DATABASE).render_as_string(hide_password=False)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from list_queries import prepare_database  # the project's seeder (COPY, then indexes)

    prepare_database(fallback, FALLBACK_CONTACTS, FALLBACK_TEAMS, reuse=True)
    count = _contact_count(fallback) or 0
    return fallback, (
        f"{safe_url(url)} holds no contacts: seeded {safe_url(fallback)} with {count:,} "
        f"contacts in {FALLBACK_TEAMS} teams instead"
    )


def build_requests(url: str, keys: dict[str, str], n: int, rng: random.Random) -> list[Request]:
    """``n`` list requests of every kind, spread over the teams."""
    with psycopg.connect(_psycopg_dsn(url)) as conn:
        companies: dict[str, list[str]] = {}
        for company_id, team_id in conn.execute("SELECT id, team_id FROM companies"):
            companies.setdefault(team_id, []).append(company_id)
        samples = conn.execute(
            "SELECT team_id, last_name, phone FROM contacts TABLESAMPLE SYSTEM (1) "
            "WHERE phone IS NOT NULL LIMIT 5000"
        ).fetchall()
    by_team: dict[str, list[tuple[str, str]]] = {}
    for team_id, last_name, phone in samples:
        by_team.setdefault(team_id, []).append((last_name, phone))
    teams = [t for t in keys if t in by_team]
    requests = []
    for index in range(n):
        kind = KINDS[index % len(KINDS)]
        team = rng.choice(teams)
        last_name, phone = rng.choice(by_team[team])
        params: dict[str, str | int]
        if kind == "page":
            params = {"limit": 50}
        elif kind == "status":
            params = {"leadStatus": rng.choice(STATUSES)}
        elif kind == "company":
            params = {"companyId": rng.choice(companies.get(team) or ["none"])}
        elif kind == "callable":
            params = {"doNotCall": "false", "hasPhone": "true"}
        elif kind == "search-name":
            start = rng.randint(0, max(0, len(last_name) - 4))
            params = {"search": last_name[start : start + 4].lower()}
        elif kind == "search-phone":
            digits = phone[2:]  # the national number of a +1 number
            params = {"search": f"{digits[:3]}-{digits[3:6]}"}
        else:
            params = {"offset": rng.randint(200, 2000), "limit": 50}
        requests.append(Request(kind, f"/api/crm/contacts?{urlencode(params)}", keys[team]))
    return requests


@contextmanager
def issued_keys(url: str) -> Iterator[dict[str, str]]:
    """A key for every team (team id → key), deleted afterwards."""
    engine = make_engine(url)
    with engine.begin() as conn:
        teams = [row[0] for row in conn.exec_driver_sql("SELECT id FROM teams ORDER BY id")]
        issued = [issue_api_key(conn, team_id=team) for team in teams]
    try:
        yield {key.team_id: key.api_key for key in issued}
    finally:
        with engine.begin() as conn:
            conn.execute(delete(api_keys).where(api_keys.c.id.in_([k.key_id for k in issued])))
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_server(url: str) -> Iterator[str]:
    """``contact-sync api`` on a free port of 127.0.0.1; its base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "contact_sync.cli.main", "api", "--host", "127.0.0.1"]
    env = {**os.environ, "CONTACT_SYNC_DATABASE_URL": url}
    with tempfile.NamedTemporaryFile("w+", prefix="api-bench-", suffix=".log") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"contact-sync api exited:\n{log.read()}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("contact-sync api did not answer /healthz in 30 s")
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(client: httpx.Client, request: Request) -> tuple[float, int, int]:
    """(milliseconds, status, rows on the page)."""
    started = time.perf_counter()
    response = client.get(request.path, headers={"Authorization": f"Bearer {request.key}"})
    elapsed = (time.perf_counter() - started) * 1000
    rows = len(response.json()["data"]) if response.status_code == 200 else 0
    return elapsed, response.status_code, rows


def sequential_pass(base: str, requests: list[Request], warmup: int) -> None:
    by_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    rows: dict[str, list[int]] = {kind: [] for kind in KINDS}
    failures = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for request in requests[:warmup]:
            timed(client, request)
        for request in requests[warmup:]:
            elapsed, status, count = timed(client, request)
            failures += status != 200
            by_kind[request.kind].append(elapsed)
            rows[request.kind].append(count)
    print("\n1 connection, sequential (latency of one request, no queueing)")
    print(f"{'kind':<14}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'rows':>8}")
    everything: list[float] = []
    for kind in KINDS:
        values = by_kind[kind]
        everything += values
        print(
            f"{kind:<14}{len(values):>6}{pct(values, 50):>10.1f}{pct(values, 99):>10.1f}"
            f"{max(values):>10.1f}{statistics.mean(rows[kind]):>8.1f}"
        )
    print(
        f"{'all':<14}{len(everything):>6}{pct(everything, 50):>10.1f}"
        f"{pct(everything, 99):>10.1f}{max(everything):>10.1f}"
        f"   {len(everything) / (sum(everything) / 1000):.0f} req/s; non-200: {failures}"
    )


WRK_SCRIPT = """
local requests = %s
local counter = 0
function init(args)
  counter = math.random(#requests)
end
function request()
  counter = counter %% #requests + 1
  local r = requests[counter]
  return wrk.format("GET", r[1], {["Authorization"] = "Bearer " .. r[2]})
end
function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    "WRK {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, \\"p90_us\\": %%d, "
    .. "\\"p99_us\\": %%d, \\"max_us\\": %%d, \\"non_2xx\\": %%d, \\"socket_errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_pass(base: str, requests: list[Request], connections: int, duration: int) -> None:
    table = ",".join(f"{{{_lua_string(r.path)},{_lua_string(r.key)}}}" for r in requests)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT % ("{" + table + "}"))
        script.flush()
        threads = min(2, connections)
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
        done = subprocess.run(
            [*command, "-s", script.name, base],
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + 60,
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    stats = json.loads(line[4:])
    seconds = stats["duration_us"] / 1e6
    print(f"\nwrk: {connections} connections on {threads} threads for {duration} s, mixed kinds")
    print(
        f"  {stats['requests']:,} requests in {seconds:.1f} s = "
        f"{stats['requests'] / seconds:.0f} req/s; "
        f"p50 {stats['p50_us'] / 1000:.1f} ms, p90 {stats['p90_us'] / 1000:.1f} ms, "
        f"p99 {stats['p99_us'] / 1000:.1f} ms, max {stats['max_us'] / 1000:.1f} ms; "
        f"non-2xx {stats['non_2xx']}, socket errors {stats['socket_errors']}"
    )


def threads_pass(base: str, requests: list[Request], connections: int) -> None:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    chunks = [requests[i::connections] for i in range(connections)]

    def run(chunk: list[Request]) -> None:
        nonlocal failures
        with httpx.Client(base_url=base, timeout=30) as client:
            for request in chunk:
                elapsed, status, _ = timed(client, request)
                with lock:
                    latencies.append(elapsed)
                    failures += status != 200

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    print(f"\nhttpx: {connections} threads, {len(latencies):,} requests, mixed kinds")
    print(
        f"  {len(latencies) / seconds:.0f} req/s; p50 {pct(latencies, 50):.1f} ms, "
        f"p99 {pct(latencies, 99):.1f} ms, max {max(latencies):.1f} ms; non-200 {failures}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--sequential", type=int, default=700, help="requests, 1 connection")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--duration", type=int, default=15, help="seconds of the wrk pass")
    parser.add_argument("--requests", type=int, default=3000, help="requests without wrk")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument(
        "--client", choices=("auto", "wrk", "httpx"), default="auto", help="load generator"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rng = random.Random(args.seed)
    url, origin = choose_database(args.database_url)
    print(origin)
    # Other work on the machine skews every figure: say how busy it was.
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min)")
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    with issued_keys(url) as keys, api_server(url) as base:
        print(f"contact-sync api (1 uvicorn worker) at {base}; {len(keys)} teams, one key each")
        warmup = 70
        sequential_pass(base, build_requests(url, keys, args.sequential + warmup, rng), warmup)
        mixed = build_requests(url, keys, 2000, rng)
        if use_wrk:
            wrk_pass(base, mixed, args.connections, args.duration)
        else:
            load = (mixed * (args.requests // len(mixed) + 1))[: args.requests]
            threads_pass(base, load, args.connections)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
