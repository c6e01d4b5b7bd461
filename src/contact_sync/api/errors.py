"""The one place that maps domain errors to HTTP answers."""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from contact_sync.db.engine import is_outage
from contact_sync.errors import (
    Conflict,
    ContactNotFound,
    ForbiddenTeam,
    NotFound,
    StaleVersion,
    ValidationFailed,
)

logger = logging.getLogger("contact_sync.api")

# A 422 lists at most this many fields, and counts the others in ``details_omitted``:
# a body of 100,000 unknown keys got a 2.3 MB answer naming each.
MAX_DETAILS = 50
# A client told the database is unavailable may try again after this many seconds: a
# dropped connection is replaced at once, a restarting server takes a few seconds.
OUTAGE_RETRY_AFTER_SECONDS = 5
# During an outage every request fails alike: one warning a minute says so, not one each.
_OUTAGE_LOG_INTERVAL_SECONDS = 60.0
_outage_logged_at: list[float] = []  # when the last warning was logged (monotonic)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """``{"error": message, ...}`` with ``status``."""
    return JSONResponse({"error": message, **extra}, status_code=status)


def validation_error(details: dict[str, str]) -> JSONResponse:
    """The 422 answer naming the first ``MAX_DETAILS`` bad fields and counting the rest."""
    if len(details) <= MAX_DETAILS:
        return error(422, "Validation failed", details=details)
    shown = dict(islice(details.items(), MAX_DETAILS))
    omitted = len(details) - MAX_DETAILS
    return error(422, "Validation failed", details=shown, details_omitted=omitted)


async def _validation_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationFailed)
    return validation_error(exc.details)


async def _request_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details: dict[str, str] = {}
    for item in exc.errors():
        loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details.setdefault(loc[0] if loc else "body", str(item.get("msg", "Invalid value")))
    return validation_error(details)


# The 404 message of each kind of missing thing; any other says "Not found".
NOT_FOUND_MESSAGES: dict[type[NotFound], str] = {ContactNotFound: "Contact not found"}


def not_found_message(exc: NotFound) -> str:
    """The message for ``exc``: its own class's, or its nearest ancestor's in the table."""
    for kind in type(exc).__mro__:
        if kind in NOT_FOUND_MESSAGES:
            return NOT_FOUND_MESSAGES[kind]
    return "Not found"


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFound)
    return error(404, not_found_message(exc))


async def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return error(403, str(exc) or "Forbidden")


async def _stale(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StaleVersion)
    response = error(412, "Version mismatch", current_version=exc.current_version)
    response.headers["ETag"] = f'"{exc.current_version}"'
    return response


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Conflict)
    return error(409, exc.error, contact_ids=exc.contact_ids)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def _log_outage(exc: Exception) -> None:
    now = time.monotonic()
    if _outage_logged_at and now - _outage_logged_at[0] < _OUTAGE_LOG_INTERVAL_SECONDS:
        return
    _outage_logged_at[:] = [now]
    cause = getattr(exc, "orig", None) or exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    logger.warning("database unavailable, answering 503: %s", reason, extra={"reason": reason})


async def _database_error(_: Request, exc: Exception) -> Response:
    """503 with ``Retry-After`` for an outage; any other database error stays a 500.

    An outage passes, and a 503 with ``Retry-After`` tells clients to come back;
    Starlette's plain-text 500 said neither, in no JSON. A database error that
    is not an outage (a bug) is re-raised, to stay a 500 with its traceback logged.
    """
    if not is_outage(exc):
        raise exc
    _log_outage(exc)
    response = error(503, "Database unavailable")
    response.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_SECONDS)
    return response


async def _client_gone(request: Request, _: Exception) -> Response:
    # A client that hangs up while sending its body is routine, not a server error:
    # one line (never the query string), not Starlette's 67-line traceback.
    logger.info(
        "client disconnected before its request body was read: %s %s",
        request.method,
        request.url.path,
        extra={"method": request.method, "path": request.url.path},
    )
    return Response(status_code=400)  # nobody is left to read it


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ValidationFailed, _validation_failed)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(ForbiddenTeam, _forbidden)
    app.add_exception_handler(StaleVersion, _stale)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
