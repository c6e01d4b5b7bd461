"""The fault-injection harness at its small size: nothing lost, nothing applied twice.

``bench/chaos.py --small`` starts its own PostgreSQL cluster and Redis server on free ports
(never the machine's), runs real workers under a supervisor while it kills them, restarts Redis
and PostgreSQL and terminates connections, then compares the database with the merge oracle.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERDICT = re.compile(r"^published=(\d+) lost=(\d+) applied_twice=(\d+) differing=(\d+)$")


@pytest.mark.slow
def test_the_small_chaos_run_loses_nothing_and_applies_nothing_twice() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--small"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=115)
    except subprocess.TimeoutExpired:
        # Ctrl-C, not a kill: the harness stops and deletes its servers on the way out.
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"chaos.py --small took more than 115 s:\n{(stdout + stderr)[-6000:]}")
    output = stdout + stderr
    lines = stdout.strip().splitlines()
    assert process.returncode == 0, output[-6000:]
    found = VERDICT.match(lines[-1]) if lines else None
    assert found is not None, output[-6000:]
    published, lost, applied_twice, differing = map(int, found.groups())
    assert published > 0
    assert (lost, applied_twice, differing) == (0, 0, 0), output[-6000:]
