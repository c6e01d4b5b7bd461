"""Structured logs: one JSON object a line.

Written by hand (a dozen lines) rather than adding a dependency: the
standard library's logging does the rest.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Renders a record and its ``extra=`` fields as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


# What Celery's records of a task carry of its arguments (the task's event: personal data).
_TASK_ARGUMENTS = frozenset({"args", "kwargs", "argsrepr", "kwargsrepr"})


class NoTaskArguments(logging.Filter):
    """Removes a task's arguments from Celery's records of it (docs/design.md §16: no PII in logs).

    Celery's line for a task that failed, was rejected or retried (``celery.app.trace``)
    carries the arguments, the whole event, in ``extra={"data": ...}``, which the JSON
    lines print, and in the mapping its message is formatted from. The task's name, id and
    exception stay: they say what happened, and the event is found by the id.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, Mapping) and not _TASK_ARGUMENTS.isdisjoint(data):
            record.data = {k: v for k, v in data.items() if k not in _TASK_ARGUMENTS}
        args = record.args
        if isinstance(args, Mapping) and not _TASK_ARGUMENTS.isdisjoint(args):
            # Kept as keys: a format naming them still renders.
            record.args = {k: "[removed]" if k in _TASK_ARGUMENTS else v for k, v in args.items()}
        return True


def configure_logging(level: str | int = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines, without task arguments.

    Python's warnings too (Celery warns through them when it runs as root):
    they would be plain text among the JSON lines.
    """
    logging.captureWarnings(True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(NoTaskArguments())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())


def api_log_config() -> dict[str, Any]:
    """The API's logging (uvicorn's ``log_config``): every line JSON on stderr.

    uvicorn's own access lines are off (``access_log=False``): the API logs
    its own (``api/observe.py``), with the route template, the path without
    its query string (docs/design.md §16: no PII in logs), the status, the duration and
    the caller's team. Other libraries' warnings reach the root logger, also
    as JSON.
    """
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    shown = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "loggers": {"uvicorn": shown, "contact_sync": shown},
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
