"""The fault-injection harness at its small size, on each broker: nothing lost, nothing applied
twice, every malformed raw item parked once.

``bench/chaos.py --small`` starts its own PostgreSQL cluster (never the machine's) and runs real
workers under a supervisor while it kills them, restarts PostgreSQL and terminates connections,
then compares the database with the merge oracle. On Redis it starts a private server and kills
and shuts it down; on RabbitMQ it makes a virtual host of its own on the tests' server
(``CONTACT_SYNC_TEST_AMQP_URL``) and closes that virtual host's connections. Either way it
mixes raw items no worker can use into the stream, each of which must become one dead letter.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import DEFAULT_AMQP

ROOT = Path(__file__).resolve().parents[1]
VERDICT = re.compile(r"^published=(\d+) lost=(\d+) applied_twice=(\d+) differing=(\d+)$")
MALFORMED = re.compile(r"^malformed sent=(\d+) parked=(\d+)")
# A loaded 2-core machine: Redis' run waits out the 60 s visibility timeout of a killed worker.
TIMEOUT_SECONDS = 130


def run_small_chaos(*extra: str) -> str:
    """``chaos.py --small`` with ``extra``; its output, once it passed."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--small", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # Ctrl-C, not a kill: the harness stops and deletes its servers on the way out.
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=90)
        pytest.fail(
            f"chaos.py --small took more than {TIMEOUT_SECONDS} s:\n{(stdout + stderr)[-6000:]}"
        )
    output = stdout + stderr
    lines = stdout.strip().splitlines()
    # Exit code 2 is the harness' own failure (no redis-server, rabbitmqctl refused, ...):
    # the output's last lines name it.
    assert process.returncode == 0, output[-6000:]
    found = VERDICT.match(lines[-1]) if lines else None
    assert found is not None, output[-6000:]
    published, lost, applied_twice, differing = map(int, found.groups())
    assert published > 0
    assert (lost, applied_twice, differing) == (0, 0, 0), output[-6000:]
    malformed = MALFORMED.match(lines[-2])
    assert malformed is not None, output[-6000:]
    sent, parked = map(int, malformed.groups())
    assert sent > 0
    assert parked == sent, output[-6000:]
    return output


@pytest.mark.slow
def test_the_small_chaos_run_on_redis_loses_nothing_and_parks_each_malformed_entry_once() -> None:
    run_small_chaos()


@pytest.mark.slow
def test_the_small_chaos_run_on_rabbitmq_loses_nothing_and_parks_each_bad_message_once() -> None:
    server = os.environ.get("CONTACT_SYNC_TEST_AMQP_URL", DEFAULT_AMQP)
    output = run_small_chaos("--broker", server)
    # A virtual host of its own, and the broker faults that touch only it (Redis' kill and
    # shutdown would touch every user of the server).
    assert "virtual host contact_sync_chaos_" in output
    assert "amqp_close_all" in output
    assert "amqp_close_one" in output
    assert "redis_kill" not in output
