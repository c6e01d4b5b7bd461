"""Every line a worker writes is JSON: Celery's banner and notices become log lines.

Celery prints a banner of ~20 lines to stdout when it starts, notices such
as ``worker: Warm shutdown (MainProcess)`` from its signal handlers, and
Python warnings (running as root) to stderr: plain text among the JSON
lines, which a log pipeline parsing JSON rejects or mangles. Here the
banner's facts are one log line (``worker starting``), warnings go through
logging (``logs.configure_logging``), and the signal handlers' notices are
written as JSON lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import IO, Any

from celery.apps import worker as celery_worker

from contact_sync.db.engine import safe_url
from contact_sync.logs import JsonFormatter

log = logging.getLogger("contact_sync.worker")


def say_as_json(msg: str, f: IO[str] | None = sys.__stderr__) -> None:
    """Celery's ``safe_say``, writing one JSON line instead of the text.

    Called from signal handlers, so like Celery's it writes with ``os.write``
    to the stream's file descriptor and takes no logging lock.
    """
    record = logging.makeLogRecord(
        {"name": "celery.apps.worker", "levelno": logging.WARNING, "levelname": "WARNING"}
    )
    record.msg = msg.strip()
    line = JsonFormatter().format(record) + "\n"
    fileno = f.fileno() if f is not None and hasattr(f, "fileno") else 2
    with contextlib.suppress(OSError):  # as Celery's: a lost notice must not break a shutdown
        os.write(fileno, line.encode())


class JsonWorker(celery_worker.Worker):  # type: ignore[misc]
    """Celery's worker program, its banner one log line and its notices JSON lines."""

    def on_before_init(self, *args: Any, **kwargs: Any) -> None:
        # The signal handlers Celery installs later look the function up in their module.
        celery_worker.safe_say = say_as_json
        super().on_before_init(*args, **kwargs)

    def emit_banner(self) -> None:
        """What the banner shows that ops need, without the broker's password."""
        pool = self.pool_cls if isinstance(self.pool_cls, str) else self.pool_cls.__module__
        log.info(
            "worker starting",
            extra={
                "hostname": self.hostname,
                "queues": sorted(self.app.amqp.queues.consume_from),
                "concurrency": self.concurrency,
                "pool": pool.rsplit(".", 1)[-1],
                "broker": safe_url(str(self.app.conf.broker_url)),
                "tasks": sorted(name for name in self.app.tasks if not name.startswith("celery.")),
            },
        )
