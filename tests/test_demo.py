"""The one-command demo on the embedded default: no server, nothing left behind."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_demo_runs_on_a_fresh_directory_with_no_settings_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    done = subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "duplicates absorbed" in out
    assert "unsupported_schema_version" in out
    assert "contact_not_found" in out
    assert "occurred_in_future" in out
    assert "History of" in out
    assert "New contact from an unknown caller" in out
    assert "Calls of the most called contacts" in out  # the calls ledger (docs/design.md §11)
    assert "Eligibility of " in out  # the calling policy (docs/design.md §12)
    assert "outside_window: " in out  # at 02:00 UTC, night in the US
    assert "next eligible at: " in out
    assert "an outbound call to +14155550199" in out
    assert list(tmp_path.iterdir()) == []  # the SQLite file it created is gone


@pytest.mark.slow
def test_the_demo_keeps_its_data_in_a_folder_here_and_prints_the_command_to_list_it(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    done = subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", "demo", "--keep"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    [command] = [
        line.strip()
        for line in done.stdout.splitlines()
        if line.strip().startswith("contact-sync --database-url")
    ]
    listing = subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", *shlex.split(command)[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "of 37" in listing.stdout  # 36 seeded contacts and one unknown caller
    assert [p.name for p in tmp_path.iterdir()] == ["contact-sync-demo"]
