"""Teams and their API keys.

Keys are 256-bit random tokens, so a plain SHA-256 is the right hash: there is
no low-entropy secret to stretch, and lookups stay one indexed equality.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from contact_sync.clock import utcnow
from contact_sync.db.tables import api_keys, teams
from contact_sync.errors import TeamNotFound, ValidationFailed
from contact_sync.ids import new_id
from contact_sync.phones import is_valid_region

KEY_PREFIX = "cs_"


@dataclass(frozen=True)
class Team:
    """What the services need to know about a team."""

    id: str
    name: str
    default_region: str
    calls_overwrite_people: bool
    min_confidence: float | None


@dataclass(frozen=True)
class IssuedKey:
    """A new API key: the plain token is shown once and never stored."""

    team_id: str
    key_id: str
    api_key: str


def hash_key(api_key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_team(
    conn: Connection, *, name: str, region: str = "US", calls_overwrite_people: bool = False
) -> Team:
    """Create a team with its default phone region."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationFailed({"name": "Name must be 1 to 200 characters"})
    if not is_valid_region(region):
        raise ValidationFailed({"region": "Region must be an ISO country code such as US"})
    team = Team(new_id(), name, region.upper(), calls_overwrite_people, None)
    conn.execute(
        insert(teams).values(
            id=team.id,
            name=team.name,
            default_region=team.default_region,
            calls_overwrite_people=calls_overwrite_people,
            min_confidence=None,
            created_at=utcnow(),
        )
    )
    return team


def issue_api_key(conn: Connection, *, team_id: str) -> IssuedKey:
    """Create a key for the team; only its hash is kept."""
    get_team(conn, team_id=team_id)
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id()
    conn.execute(
        insert(api_keys).values(
            id=key_id, team_id=team_id, key_hash=hash_key(token), created_at=utcnow()
        )
    )
    return IssuedKey(team_id=team_id, key_id=key_id, api_key=token)


def get_team(conn: Connection, *, team_id: str) -> Team:
    """The team, or ``TeamNotFound``."""
    if "\x00" in team_id:  # PostgreSQL text cannot hold it; no id contains it
        raise TeamNotFound(team_id)
    row = conn.execute(select(teams).where(teams.c.id == team_id)).one_or_none()
    if row is None:
        raise TeamNotFound(team_id)
    return Team(
        row.id, row.name, row.default_region, row.calls_overwrite_people, row.min_confidence
    )


def list_teams(conn: Connection) -> list[Team]:
    """Every team, oldest first."""
    rows = conn.execute(select(teams).order_by(teams.c.created_at, teams.c.id)).all()
    return [
        Team(r.id, r.name, r.default_region, r.calls_overwrite_people, r.min_confidence)
        for r in rows
    ]


def authenticate(conn: Connection, *, api_key: str) -> tuple[str, str] | None:
    """``(team_id, key_id)`` for a valid, unrevoked key, else None."""
    digest = hash_key(api_key)
    row = conn.execute(
        select(api_keys.c.id, api_keys.c.team_id, api_keys.c.key_hash).where(
            api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
        )
    ).one_or_none()
    # The lookup is by hash, so timing reveals nothing about the key; the
    # constant-time compare guards against a collation that is not exact.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row.team_id, row.id
