"""The Celery app is built by ``create_app(settings)``; ``contact_sync.worker.app`` is the one
``celery -A`` finds, built from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contact_sync.cli.main import main
from contact_sync.settings import Settings
from contact_sync.worker.celery_app import TASK_APPLY, TASK_APPLY_BATCH, create_app, settings_of

UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


def test_every_app_built_has_the_two_contract_tasks() -> None:
    for url in ("memory://", "redis://127.0.0.1:1/3"):
        app = create_app(Settings(broker_url=url))
        assert {TASK_APPLY, TASK_APPLY_BATCH} <= set(app.tasks)
        assert app.tasks[TASK_APPLY].app is app
        assert app.tasks[TASK_APPLY].Strategy == "contact_sync.worker.grouping:strategy"


def test_an_app_carries_the_settings_it_was_built_from() -> None:
    settings = Settings(broker_url="memory://", min_confidence=0.9)
    assert settings_of(create_app(settings)) is settings


def test_celery_dash_a_finds_the_app_built_from_the_environment(tmp_path: Path) -> None:
    probe = (
        "import json\n"
        "from celery.app.utils import find_app\n"
        "app = find_app('contact_sync.worker.app')\n"
        "print(json.dumps([app.conf.broker_url, sorted(app.tasks)]))\n"
    )
    env = {**os.environ, "CONTACT_SYNC_BROKER_URL": "memory://"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    broker_url, tasks = json.loads(done.stdout)
    assert broker_url == "memory://"
    assert {TASK_APPLY, TASK_APPLY_BATCH} <= set(tasks)


def test_the_cli_gives_its_flags_to_the_app_and_leaves_the_environment_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    before = dict(os.environ)
    try:
        code = main(["--broker-url", UNREACHABLE_BROKER, "publish", str(events), "--quiet"])
        after = dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(before)
    assert code == 5
    assert f"cannot reach broker {UNREACHABLE_BROKER}" in capsys.readouterr().err
    assert after == before


def test_the_queue_and_task_names_are_the_published_contract() -> None:
    """Publishers in other languages hard-code these names (docs/celery-message.md):
    a rename of a module must never rename them."""
    from contact_sync.worker.celery_app import POISON_QUEUE, QUEUE, TASK_APPLY, TASK_APPLY_BATCH

    assert QUEUE == "contact_sync.events"
    assert POISON_QUEUE == "contact_sync.events.poison"
    assert TASK_APPLY == "contact_sync.apply_call_completed"
    assert TASK_APPLY_BATCH == "contact_sync.apply_call_completed_batch"
    contract = (Path(__file__).resolve().parents[1] / "docs" / "celery-message.md").read_text()
    assert f"**`{QUEUE}`**" in contract
    assert TASK_APPLY in contract
    assert TASK_APPLY_BATCH in contract


@pytest.mark.parametrize("module", ["_noop_tasks", "_naive_tasks"])
def test_the_benchmarks_peer_apps_take_the_workers_queue_and_delivery_settings(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ceiling and naive peers of bench/worker_throughput.py differ from the worker only by
    their task: a change of the queue or of how messages are taken reaches them."""
    import importlib

    from contact_sync.worker import celery_app

    # A renamed queue (as if the contract changed) must reach the peers without editing them.
    monkeypatch.setattr(celery_app, "QUEUE", "contact_sync.events.renamed")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    monkeypatch.setenv("BENCH_PREFETCH", "16")
    monkeypatch.delitem(sys.modules, module, raising=False)
    peer = importlib.import_module(module).app
    worker = create_app(Settings(worker_prefetch_multiplier=16))
    for name in (
        "task_serializer",
        "accept_content",
        "task_ignore_result",
        "task_acks_late",
        "task_reject_on_worker_lost",
        "worker_prefetch_multiplier",
        "task_default_queue",
        "worker_send_task_events",
        "task_send_sent_event",
    ):
        assert peer.conf[name] == worker.conf[name], name
    assert peer.conf.task_default_queue == "contact_sync.events.renamed"
