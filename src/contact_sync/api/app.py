"""The ASGI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine

from contact_sync import __version__
from contact_sync.api import errors
from contact_sync.api.dead_letter_routes import router as dead_letter_router
from contact_sync.api.docs import mount_docs
from contact_sync.api.field_routes import router as field_router
from contact_sync.api.limits import BodySizeLimit
from contact_sync.api.observe import RequestObserver, register_http_metrics
from contact_sync.api.policy_routes import router as policy_router
from contact_sync.api.rate_limit import rate_limiter_for
from contact_sync.api.readiness import Readiness, probe
from contact_sync.api.routes import router
from contact_sync.api.schemas import Health
from contact_sync.api.upsert_routes import router as upsert_router
from contact_sync.db.engine import make_engine
from contact_sync.ops.metrics import OpenDeadLetters
from contact_sync.scheduling.jurisdictions import load_jurisdictions
from contact_sync.scheduling.numbers import phone_facts
from contact_sync.settings import Settings, get_settings


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Load the long-lived data, then take it out of the garbage collector's view.

    The process holds ~120,000 objects once the framework, the jurisdiction
    rules and the number metadata are loaded; every full collection walked
    them all, 50-80 ms on the 2-core machine, landing on whichever request
    was running (the eligible stream's p95 doubled). ``gc.freeze`` keeps them
    out of later collections (docs/design.md §12).
    """
    if not gc.get_freeze_count():  # once a process (tests build many apps)
        load_jurisdictions()
        phone_facts("+12025550100")  # loads phonenumbers' geocoding and zone data
        gc.collect()
        gc.freeze()
    yield


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The HTTP API over the database of ``settings`` (or the given engine)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="contact_sync",
        version=__version__,
        description="Contacts of a voice-AI calling CRM: create, list, update, history, "
        "and the campaign scheduler's eligible stream.",
        docs_url=None,  # served by mount_docs, from local assets
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.engine = engine or make_engine(settings.database_url)
    app.state.settings = settings
    app.state.rate_limiter = rate_limiter_for(settings)
    errors.install(app)
    app.include_router(router)
    app.include_router(upsert_router)
    app.include_router(dead_letter_router)
    app.include_router(policy_router)
    app.include_router(field_router)
    mount_docs(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestObserver)  # outermost: it sees the 413s above too
    _serve_metrics(app)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok"}

    broker_url = settings.broker_url
    app.state.readiness = Readiness(
        lambda: probe(app.state.engine, broker_url), settings.api_readyz_cache_seconds
    )

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}}, tags=["health"])
    async def readyz() -> Any:
        """The database and the broker are reachable; how many events wait (cached a few s)."""
        ready, body = await app.state.readiness.answer()
        return body if ready else JSONResponse(body, status_code=503)

    return app


def _serve_metrics(app: FastAPI) -> None:
    """``GET /metrics``: requests by route and status, and the open dead letters by reason.

    Without a key, as ``/healthz``: it holds counts, no team's data, and a
    Prometheus server scrapes it without credentials. Being unauthenticated,
    it takes no token from any key's rate limit.
    """
    registry = CollectorRegistry()
    register_http_metrics(registry)
    registry.register(OpenDeadLetters(lambda: app.state.engine))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
