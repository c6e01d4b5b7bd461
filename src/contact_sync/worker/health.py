"""A worker's liveness without remote control: a heartbeat file its consumer touches.

Docker's health check asked the worker ``celery inspect ping`` over the
broker, which needs remote control, and remote control is off by default
(anyone who can write to the broker could broadcast ``shutdown``). Instead
the worker's consumer touches a file every ``HEARTBEAT_SECONDS`` from its
event loop, once connected to the broker and consuming: the file goes stale
when the loop is stuck, the broker connection is being re-established, or
the worker is gone (it removes the file when it stops).
``contact-sync worker-health`` reads it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from celery import bootsteps

from contact_sync.settings import get_settings

HEARTBEAT_SECONDS = 5.0
# The health check's default: a few missed beats, not one slow loop turn.
MAX_AGE_SECONDS = 60.0


def heartbeat_path() -> Path:
    """Where this configuration's worker keeps its heartbeat file."""
    configured = get_settings().worker_heartbeat_file
    return Path(configured or Path(tempfile.gettempdir()) / "contact-sync-worker.heartbeat")


def beat(path: Path) -> None:
    """Write this process' id to ``path`` (atomically: a reader never sees half a file)."""
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    fresh.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(fresh, path)


def check(path: Path, max_age: float, now: float | None = None) -> str | None:
    """Why the worker of ``path`` is not healthy, or ``None`` if it is."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
        pid = int(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return f"no heartbeat file {path}: the worker is not running or not consuming"
    except (OSError, ValueError) as error:
        return f"heartbeat file {path} unreadable: {error}"
    if age > max_age:
        return f"heartbeat {age:.0f} s old (limit {max_age:.0f} s): the worker's loop is stuck"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"the worker (pid {pid}) that wrote {path} is gone"
    except PermissionError:  # alive, another user's
        pass
    return None


class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: touch the heartbeat file while the consumer runs."""

    label = "Heartbeat file"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.path = heartbeat_path()
        self.timer_entry: Any = None
        super().__init__(c, **kwargs)

    def _beat(self) -> None:
        # A full or read-only disk: the check then reports a stale beat.
        with contextlib.suppress(OSError):
            beat(self.path)

    def start(self, c: Any) -> None:
        self._beat()
        self.timer_entry = c.timer.call_repeatedly(HEARTBEAT_SECONDS, self._beat)

    def stop(self, c: Any) -> None:
        # Restarting after a lost connection: the beat stops until it is back.
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        with contextlib.suppress(OSError):
            if self.path.read_text(encoding="ascii").strip() == str(os.getpid()):
                self.path.unlink()
