"""Transient errors are retried inside the task, never dead-lettered, never dropped."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from contact_sync.worker import tasks

BUDGET = 60.0  # seconds of retrying before a message is requeued


def _flaky(failures: int) -> Any:
    calls = {"n": 0}

    def work() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise OperationalError("UPDATE contacts", {}, Exception("deadlock detected"))
        return "done"

    return work, calls


def test_a_transient_error_is_retried_in_place_until_it_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks.time, "sleep", lambda _: None)
    work, calls = _flaky(3)
    assert tasks._retrying_transient(work, "msg-1", seconds=BUDGET) == "done"
    assert calls["n"] == 4


def test_a_transient_error_that_outlasts_the_budget_requeues_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks.time, "sleep", lambda _: None)
    work, _ = _flaky(100)
    with pytest.raises(Reject) as raised:
        tasks._retrying_transient(work, "msg-2", seconds=0)
    assert raised.value.requeue is True


def test_a_permanent_error_is_not_retried() -> None:
    calls = {"n": 0}

    def work() -> None:
        calls["n"] += 1
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        tasks._retrying_transient(work, "msg-3", seconds=BUDGET)
    assert calls["n"] == 1
