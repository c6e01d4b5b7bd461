"""What the API did: request counters and latencies on ``/metrics``, and JSON access lines.

Both are labelled by the route's template (``/api/crm/contacts/{contact_id}``),
never the path a client sent: one series per route, however many contacts,
and no id or search text in a label. A path no route serves is ``unmatched``;
a method the API does not know is ``other``. The access line carries the
path without its query string (searches hold names, numbers and emails) and
the caller's team, never the key.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "contact_sync_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=None,
)
HTTP_SECONDS = Histogram(
    "contact_sync_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=None,
)
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_log = logging.getLogger("contact_sync.access")


def register_http_metrics(registry: CollectorRegistry) -> None:
    """Add the request counter and histogram to ``registry`` (one per app's ``/metrics``)."""
    registry.register(HTTP_REQUESTS)
    registry.register(HTTP_SECONDS)


def route_of(scope: Scope) -> str:
    """The template of the route that answered, or ``unmatched``."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


def team_of(scope: Scope) -> str | None:
    """The authenticated caller's team (``api/auth.py`` keeps it in the request's state)."""
    state = scope.get("state")
    team = state.get("team_id") if isinstance(state, dict) else None
    return team if isinstance(team, str) else None


class RequestObserver:
    """Pure ASGI middleware: counts, times and logs each HTTP request once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it starts a response

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            _record(scope, status, time.perf_counter() - started)


def _record(scope: Scope, status: int, elapsed: float) -> None:
    method = scope["method"] if scope["method"] in _METHODS else "other"
    route = route_of(scope)
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_SECONDS.labels(route, method).observe(elapsed)
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "path": scope["path"][:500],
        "status": status,
        "duration_ms": round(elapsed * 1000, 2),
        "team_id": team_of(scope),
    }
    access_log.info("%s %s %s", method, route, status, extra=fields)
