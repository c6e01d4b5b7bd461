"""Bearer API keys: each key reaches its own team only; a ``read`` key reads only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from contact_sync.accounts.teams import Scope, find_key, needs_touch, touch_key
from contact_sync.api.rate_limit import RateLimited, RateLimiter
from contact_sync.clock import utcnow
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ForbiddenTeam

_bearer = HTTPBearer(
    auto_error=False, description="A team API key from `contact-sync teams create`."
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's team and the key's id (for history records)."""

    team_id: str
    key_id: str
    scope: Scope = "write"

    def team(self, requested: str | None) -> str:
        """The team a request acts on: the key's own; another is 403."""
        if requested is not None and requested != self.team_id:
            raise ForbiddenTeam("This API key does not belong to that team")
        return self.team_id


def engine_of(request: Request) -> Engine:
    """The app's database engine."""
    engine: Engine = request.app.state.engine
    return engine


# Methods that change nothing: the only ones a ``read`` key may use. Decided here, by
# method, so that a write route added later is refused to read keys without a word.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY = "This API key may only read"


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Authenticate the bearer key (or answer 401), take a token from its bucket (or 429),
    and refuse a write to a ``read`` key (403).

    Before the route runs, so a refused request costs no body read and no parsing.
    The key's ``last_used_at`` is written only when it is a minute old (``touch_key``).
    """
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(401, "Missing API key", headers={"WWW-Authenticate": "Bearer"})
    token = credentials.credentials
    if len(token) > 200 or not token.isascii() or "\x00" in token:
        raise HTTPException(401, "Invalid API key", headers={"WWW-Authenticate": "Bearer"})
    engine = engine_of(request)
    with unit_of_work(engine) as uow:
        found = find_key(uow.conn, api_key=token)
    if found is None:
        raise HTTPException(401, "Invalid API key", headers={"WWW-Authenticate": "Bearer"})
    now = utcnow()
    if needs_touch(found, now):
        with unit_of_work(engine) as uow:
            touch_key(uow.conn, key_id=found.id, now=now)
            uow.commit()
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        try:
            limiter.check(team_id=found.team_id, key_id=found.id)
        except RateLimited as exc:
            raise HTTPException(
                429, "Rate limit exceeded", headers={"Retry-After": str(exc.retry_after)}
            ) from None
    if found.scope != "write" and request.method not in READ_METHODS:
        raise HTTPException(403, READ_ONLY)
    request.state.team_id = found.team_id  # for the access log (api/observe.py)
    return Caller(team_id=found.team_id, key_id=found.id, scope=found.scope)


CallerDep = Annotated[Caller, Depends(caller)]
EngineDep = Annotated[Engine, Depends(engine_of)]
