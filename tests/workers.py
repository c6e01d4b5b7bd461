"""Real worker processes for the worker tests (their messages: ``tests/factories.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start_worker(
    database_url: str,
    broker_url: str,
    log_path: Path,
    *,
    concurrency: int = 1,
    wait_ready: bool = True,
    extra_args: tuple[str, ...] = (),
    stderr_path: Path | None = None,
    **env: str,
) -> subprocess.Popen[bytes]:
    """``contact-sync worker`` as a process logging to ``log_path``; waits until it is ready.

    Its standard error goes there too, unless ``stderr_path`` names a file of its own.
    """
    environment = {
        **os.environ,
        "CONTACT_SYNC_DATABASE_URL": database_url,
        "CONTACT_SYNC_BROKER_URL": broker_url,
        **env,
    }
    # A file, not a pipe: nobody reads a pipe while tests run, and a full one blocks the worker.
    errors = stderr_path.open("ab") if stderr_path is not None else None
    with log_path.open("ab") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "contact_sync.cli.main",
                "worker",
                "--concurrency",
                str(concurrency),
                *extra_args,
            ],
            env=environment,
            stdout=handle,
            stderr=errors if errors is not None else subprocess.STDOUT,
        )
    if errors is not None:
        errors.close()
    ready_in = stderr_path if stderr_path is not None else log_path
    deadline = time.monotonic() + 60
    while wait_ready and b' ready."' not in ready_in.read_bytes():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return process


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """A warm shutdown, then a kill if it does not come."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cli_process(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``contact-sync ARGS`` in a process of its own (``stdin`` as its input); its result."""
    return subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run ``contact-sync ARGS`` in a process of its own; its stdout (it must succeed)."""
    done = cli_process(env, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout
