"""Celery signal receivers loaded into a test worker (``-I tests.visibility_probe``).

Each signal the worker sends is appended as one JSON line to the file named
by ``CONTACT_SYNC_TEST_SIGNAL_LOG``, with the process that sent it, so a test
can check what the main process and the pool processes announced.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import signals

LOG = os.environ.get("CONTACT_SYNC_TEST_SIGNAL_LOG", "")


def _write(signal: str, **fields: Any) -> None:
    line = json.dumps({"signal": signal, "pid": os.getpid(), **fields}, default=repr) + "\n"
    # One write of a line to an O_APPEND file: lines of several processes never interleave.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _header_id(message: Any) -> Any:
    headers = getattr(message, "headers", None)
    return headers.get("id") if isinstance(headers, dict) else None


@signals.task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    _write("task_received", id=request.id, name=request.name)


@signals.task_prerun.connect
def _prerun(task_id: str = "", task: Any = None, args: Any = None, **_: Any) -> None:
    _write("task_prerun", id=task_id, name=task.name, args=args, request_id=task.request.id)


@signals.task_postrun.connect
def _postrun(task_id: str = "", task: Any = None, state: Any = None, **_: Any) -> None:
    _write("task_postrun", id=task_id, name=task.name, state=state)


@signals.task_success.connect
def _success(sender: Any = None, **_: Any) -> None:
    _write("task_success", id=sender.request.id)


@signals.task_failure.connect
def _failure(task_id: str = "", exception: Any = None, **_: Any) -> None:
    _write("task_failure", id=task_id, exception=repr(exception))


@signals.task_revoked.connect
def _revoked(request: Any = None, terminated: Any = None, **_: Any) -> None:
    _write("task_revoked", id=request.id, terminated=terminated)


@signals.task_rejected.connect
def _rejected(message: Any = None, exc: Any = None, **_: Any) -> None:
    _write("task_rejected", id=_header_id(message), exc=repr(exc))


@signals.task_unknown.connect
def _unknown(name: str = "", id: str = "", exc: Any = None, **_: Any) -> None:
    _write("task_unknown", id=id, name=name, exc=repr(exc))
