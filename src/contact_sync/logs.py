"""Structured logs: one JSON object a line.

Written by hand (a dozen lines) rather than adding a dependency: the
standard library's logging does the rest.
"""

from __future__ import annotations

import copy
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
    """Removes a task's arguments from Celery's records of it (DESIGN §16: no PII in logs).

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


class PathOnlyAccessLog(logging.Filter):
    """Drops the query string from uvicorn's access lines.

    Searches carry names, phone numbers and emails; the path alone (contact ids)
    is what an access log needs (DESIGN §16: no PII in logs).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access: (client_addr, method, path with query string, http_version, status)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def api_log_config() -> dict[str, Any]:
    """uvicorn's logging, with paths only in access lines and this package's loggers shown."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"path_only": {"()": PathOnlyAccessLog}}
    config["loggers"]["uvicorn.access"]["filters"] = ["path_only"]
    config["loggers"]["contact_sync"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config
