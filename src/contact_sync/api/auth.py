"""Bearer API keys: each key reaches its own team only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from contact_sync.api.rate_limit import RateLimited, RateLimiter
from contact_sync.errors import ForbiddenTeam
from contact_sync.teams import authenticate

_bearer = HTTPBearer(
    auto_error=False, description="A team API key from `contact-sync teams create`."
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's team and the key's id (for history records)."""

    team_id: str
    key_id: str

    def team(self, requested: str | None) -> str:
        """The team a request acts on: the key's own; another is 403."""
        if requested is not None and requested != self.team_id:
            raise ForbiddenTeam("This API key does not belong to that team")
        return self.team_id


def engine_of(request: Request) -> Engine:
    """The app's database engine."""
    engine: Engine = request.app.state.engine
    return engine


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Authenticate the bearer key (or answer 401), and take a token from its bucket (or 429).

    Before the route runs, so a limited request costs no body read and no parsing.
    """
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(401, "Missing API key", headers={"WWW-Authenticate": "Bearer"})
    token = credentials.credentials
    if len(token) > 200 or not token.isascii() or "\x00" in token:
        raise HTTPException(401, "Invalid API key", headers={"WWW-Authenticate": "Bearer"})
    with engine_of(request).connect() as conn:
        found = authenticate(conn, api_key=token)
    if found is None:
        raise HTTPException(401, "Invalid API key", headers={"WWW-Authenticate": "Bearer"})
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        try:
            limiter.check(team_id=found[0], key_id=found[1])
        except RateLimited as exc:
            raise HTTPException(
                429, "Rate limit exceeded", headers={"Retry-After": str(exc.retry_after)}
            ) from None
    return Caller(team_id=found[0], key_id=found[1])


CallerDep = Annotated[Caller, Depends(caller)]
EngineDep = Annotated[Engine, Depends(engine_of)]
