"""CPU per event of the batch path, in one process, and where it goes (issue 17 part 2).

Applies the worker benchmark's workload (``bench/worker_throughput.py``: 2,000 contacts in 10
teams, 10 % duplicates, 10 % out of order, 5-15 custom fields an event) with the worker's first
pass (``apply_free_payloads``) on PostgreSQL, in groups of ``--batch`` events, one transaction
each, as a pool process does for a batch message (``--batch 500``) or a group of one-event
messages (``--batch 4``). Each round starts from the same seeded database (a copy
of a template), so rounds are comparable; the events are new to it every round.

Run from the repository root::

    python bench/profile_apply.py                    # 3 rounds of 5,000 events, CPU per event
    python bench/profile_apply.py --profile 25       # and the top 25 functions (cProfile)
    python bench/profile_apply.py --rounds 1 --events 2000
    python bench/profile_apply.py --statements       # and the wall time of each statement
    python bench/profile_apply.py --typed --batch 5  # teams with definitions, small groups

The collector is set up as in a pool process (``worker/runtime.settle_collector``: start-up
objects frozen, rarer young collections; only frozen for code older than it) unless
``--stock-gc``. Printed per round: the client's CPU per event (``time.process_time`` around
the apply and its commit: Python, SQLAlchemy, psycopg) and the PostgreSQL backend's
(``/proc/PID/stat`` of the connection's backend, on the same machine), in ms. Compare two
versions of the code in alternate runs (``PYTHONPATH=OTHER/src``): the machine is shared and
its load moves the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg import sql
from sqlalchemy import Connection, Engine, event

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
os.environ.setdefault("BENCH_WORKER_DATABASE", "contact_sync_bench_profile")

import worker_throughput as wt  # noqa: E402

try:
    from contact_sync.calls.apply import apply_free_payloads
except ImportError:  # code from before the restructure (issue 13): one pass only
    from contact_sync.apply import apply_payloads as _one_pass

    def apply_free_payloads(conn: Connection, payloads: Sequence[Any], **_: Any) -> Any:
        _one_pass(conn, payloads)
        return {}, []


from contact_sync.db.engine import make_engine  # noqa: E402

try:
    from contact_sync.worker.runtime import settle_collector
except ImportError:  # code from before it: its pool processes froze the collector only
    settle_collector = gc.freeze

TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(conn: Connection) -> float:
    """CPU seconds the connection's PostgreSQL backend has used (same machine)."""
    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class StatementClock:
    """Wall time and count of each statement the engine runs, by its first words.

    The wall time is the client's wait: the round trip and PostgreSQL's
    execution. COPY goes through psycopg directly and is not seen here: it is
    in the round's wall time, beside what this lists.
    """

    def __init__(self, engine: Engine) -> None:
        self.times: dict[str, list[float]] = {}
        self._started: list[float] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_: Any) -> None:
        self._started.append(time.perf_counter())

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        took = time.perf_counter() - self._started.pop()
        key = " ".join(statement.split())[:90]
        self.times.setdefault(key, []).append(took)

    def report(self, events: int, wall: float) -> None:
        total = sum(sum(t) for t in self.times.values())
        print(f"statements: {total * 1000 / events:.3f} ms/event of {wall * 1000 / events:.3f}")
        ranked = sorted(self.times.items(), key=lambda kv: -sum(kv[1]))
        for key, took in ranked[:25]:
            print(
                f"  {sum(took) * 1000 / events:7.3f} ms/event {len(took):6d}x"
                f" {statistics.median(took) * 1000:7.2f} ms median  {key}"
            )


def one_round(
    deliveries: Sequence[dict[str, Any]],
    batch: int,
    profiler: cProfile.Profile | None,
    statements: bool = False,
    typed: bool = False,
) -> tuple[float, float]:
    """(client ms/event, backend ms/event) of applying ``deliveries`` on a fresh database."""
    wt.reset_database()
    if typed:
        wt.define_typed_fields()
    engine = make_engine(wt.db_url())
    clock = StatementClock(engine) if statements else None
    began_wall = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.commit()
            server = backend_cpu(conn)
            cpu = 0.0
            for start in range(0, len(deliveries), batch):
                group = deliveries[start : start + batch]
                began = time.process_time()
                if profiler is not None:
                    profiler.enable()
                # The worker's first pass; alone on the database, it defers nothing.
                _found, deferred = apply_free_payloads(conn, group, min_confidence=0.5)
                conn.commit()
                assert not deferred, "one connection alone found a busy contact"
                if profiler is not None:
                    profiler.disable()
                cpu += time.process_time() - began
            server = backend_cpu(conn) - server
        if clock is not None:
            clock.report(len(deliveries), time.perf_counter() - began_wall)
    finally:
        engine.dispose()
    return cpu * 1000 / len(deliveries), server * 1000 / len(deliveries)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5_000, help="deliveries a round")
    parser.add_argument("--batch", type=int, default=500, help="events a transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--statements", action="store_true", help="print each statement's wall time a round"
    )
    parser.add_argument(
        "--typed",
        action="store_true",
        help="every team defines the events' custom fields (worker_throughput's *_typed modes)",
    )
    parser.add_argument(
        "--stock-gc", action="store_true", help="keep Python's collector settings (no freeze)"
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    contacts = wt.build_template(rng)
    workload = wt.generate(rng, contacts, args.events, "evt")
    if not args.stock_gc:
        settle_collector()  # as a pool process does after start-up
    # CPU time, not wall: waits on PostgreSQL are not the client's cost.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    clients, servers = [], []
    try:
        for index in range(args.rounds):
            client, server = one_round(
                workload.deliveries, args.batch, profiler, args.statements, args.typed
            )
            clients.append(client)
            servers.append(server)
            print(
                f"round {index + 1}: client {client:.3f} ms/event,"
                f" PostgreSQL backend {server:.3f} ms/event [load {os.getloadavg()[0]:.1f}]",
                flush=True,
            )
    finally:
        with wt.admin() as conn:
            for name in (wt.DATABASE, wt.TEMPLATE):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    print(
        f"client ms/event: min {min(clients):.3f} median {statistics.median(clients):.3f};"
        f" backend ms/event: median {statistics.median(servers):.3f}"
        f" ({args.events} deliveries in groups of {args.batch}, {args.rounds} rounds)"
    )
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.profile)
        stats.sort_stats("cumulative").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
