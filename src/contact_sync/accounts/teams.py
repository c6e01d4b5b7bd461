"""Teams and their API keys.

Keys are 256-bit random tokens, so a plain SHA-256 is the right hash: there is
no low-entropy secret to stretch, and lookups stay one indexed equality.

A key has a scope: ``write`` (every route) or ``read`` (what the campaign
scheduler should hold: the API refuses it every write). Keys are revoked,
never deleted, so history records keep naming the key that wrote them. A
key's ``last_used_at`` is refreshed at most once a minute (``touch_key``):
a write per request would cost the database more than the request.

Team names are unique regardless of case, accents' composition and runs of
spaces (``name_key``, under a unique index): two teams both called "Acme
Solar" are what a lost ``teams create`` output followed by a retry makes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import Connection, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from contact_sync.clock import utcnow
from contact_sync.contacts.phones import is_valid_region
from contact_sync.db.tables import api_keys, teams
from contact_sync.errors import NotFound, TeamNotFound, ValidationFailed
from contact_sync.ids import new_id

KEY_PREFIX = "cs_"
Scope = Literal["read", "write"]
SCOPES: tuple[str, ...] = get_args(Scope)
# How stale ``last_used_at`` may get: "used today" is what an operator asks, not
# "used this second".
LAST_USED_RESOLUTION = timedelta(minutes=1)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Team:
    """What the services need to know about a team."""

    id: str
    name: str
    default_region: str
    calls_overwrite_people: bool
    min_confidence: float | None
    undefined_custom_fields: str = "accept"  # or "reject" (docs/design.md §13)
    duplicate_phones: str = "allow"  # or "reject" (docs/design.md §14)


@dataclass(frozen=True)
class TeamSummary:
    """A team as ``teams list`` shows it: with its count of usable keys."""

    id: str
    name: str
    region: str
    created_at: datetime
    key_count: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class IssuedKey:
    """A new API key: the plain token is shown once and never stored."""

    team_id: str
    key_id: str
    api_key: str
    scope: Scope = "write"
    name: str | None = None


@dataclass(frozen=True)
class ApiKey:
    """A key as operators and the API see it: never the token, never its hash."""

    id: str
    team_id: str
    name: str | None
    scope: Scope
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = dict(self.__dict__)
        for key in ("created_at", "last_used_at", "revoked_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


class DuplicateTeamName(ValidationFailed):
    """Another team already has this name (compared as ``name_key`` does)."""

    def __init__(self, existing_name: str, existing_id: str) -> None:
        super().__init__(
            {"name": f"A team named {existing_name!r} already exists (team {existing_id})"}
        )


class KeyNotFound(NotFound):
    """No API key with that id."""


def hash_key(api_key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def name_key(name: str) -> str:
    """What makes two team names the same (Unicode form, case and runs of spaces aside), hashed.

    Hashed so that the unique index holds a fixed 64 characters: NFKC and case
    folding can make one character many (U+FDFA is 18).
    """
    folded = _SPACES.sub(" ", unicodedata.normalize("NFKC", name).casefold()).strip()
    return hashlib.sha256(folded.encode()).hexdigest()


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate (argv that was not UTF-8)
        return False
    return True


def create_team(
    conn: Connection, *, name: str, region: str = "US", calls_overwrite_people: bool = False
) -> Team:
    """Create a team with its default phone region; a name taken already is refused."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationFailed({"name": "Name must be 1 to 200 characters"})
    if "\x00" in name or not _is_unicode(name):
        raise ValidationFailed({"name": "Name must be Unicode text without NUL characters"})
    if not is_valid_region(region):
        raise ValidationFailed({"region": "Region must be an ISO country code such as US"})
    key = name_key(name)
    existing = conn.execute(select(teams.c.id, teams.c.name).where(teams.c.name_key == key)).first()
    if existing is not None:
        raise DuplicateTeamName(existing.name, existing.id)
    team = Team(new_id(), name, region.upper(), calls_overwrite_people, None)
    try:
        # A savepoint: a concurrent create of the same name loses on the unique
        # index, and the caller's transaction stays usable for the error.
        with conn.begin_nested():
            conn.execute(
                insert(teams).values(
                    id=team.id,
                    name=team.name,
                    name_key=key,
                    default_region=team.default_region,
                    calls_overwrite_people=calls_overwrite_people,
                    min_confidence=None,
                    created_at=utcnow(),
                )
            )
    except IntegrityError:
        winner = conn.execute(
            select(teams.c.id, teams.c.name).where(teams.c.name_key == key)
        ).first()
        if winner is None:
            raise
        raise DuplicateTeamName(winner.name, winner.id) from None
    return team


def _key_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable() or not _is_unicode(name):
        raise ValidationFailed({"name": "Key name must be 1 to 100 printable characters"})
    return name


def issue_api_key(
    conn: Connection, *, team_id: str, scope: str = "write", name: str | None = None
) -> IssuedKey:
    """Create a key for the team; only its hash is kept."""
    get_team(conn, team_id=team_id)
    if scope not in SCOPES:
        raise ValidationFailed({"scope": "Scope must be read or write"})
    checked: Scope = "read" if scope == "read" else "write"
    name = _key_name(name)
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id()
    conn.execute(
        insert(api_keys).values(
            id=key_id,
            team_id=team_id,
            key_hash=hash_key(token),
            name=name,
            scope=checked,
            created_at=utcnow(),
        )
    )
    return IssuedKey(team_id=team_id, key_id=key_id, api_key=token, scope=checked, name=name)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        team_id=row.team_id,
        name=row.name,
        scope="read" if row.scope == "read" else "write",
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.team_id,
    api_keys.c.name,
    api_keys.c.scope,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
)


def list_api_keys(conn: Connection, *, team_id: str) -> list[ApiKey]:
    """The team's keys, revoked ones included, oldest first; ``TeamNotFound`` if no team."""
    get_team(conn, team_id=team_id)
    rows = conn.execute(
        select(*_KEY_COLUMNS)
        .where(api_keys.c.team_id == team_id)
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    return [_api_key(row) for row in rows]


def revoke_api_key(conn: Connection, *, key_id: str, now: datetime | None = None) -> ApiKey:
    """Revoke a key: every request with it is 401 from now on. Revoking twice keeps the
    first time. ``KeyNotFound`` for an unknown id."""
    if "\x00" in key_id:
        raise KeyNotFound(f"no API key {key_id!r}")
    conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    row = conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.id == key_id)).one_or_none()
    if row is None:
        raise KeyNotFound(f"no API key {key_id!r}")
    return _api_key(row)


def team_from_row(row: Any) -> Team:
    """A ``teams`` row as a team."""
    return Team(
        row.id,
        row.name,
        row.default_region,
        row.calls_overwrite_people,
        row.min_confidence,
        row.undefined_custom_fields,
        row.duplicate_phones,
    )


def get_team(conn: Connection, *, team_id: str) -> Team:
    """The team, or ``TeamNotFound``."""
    if "\x00" in team_id:  # PostgreSQL text cannot hold it; no id contains it
        raise TeamNotFound(team_id)
    row = conn.execute(select(teams).where(teams.c.id == team_id)).one_or_none()
    if row is None:
        raise TeamNotFound(team_id)
    return team_from_row(row)


def team_summaries(conn: Connection) -> list[TeamSummary]:
    """Every team with its number of unrevoked keys, oldest first."""
    usable = (
        select(api_keys.c.team_id, func.count().label("key_count"))
        .where(api_keys.c.revoked_at.is_(None))
        .group_by(api_keys.c.team_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            teams.c.id, teams.c.name, teams.c.default_region, teams.c.created_at, usable.c.key_count
        )
        .outerjoin(usable, usable.c.team_id == teams.c.id)
        .order_by(teams.c.created_at, teams.c.id)
    )
    return [
        TeamSummary(r.id, r.name, r.default_region, r.created_at, int(r.key_count or 0))
        for r in rows
    ]


def list_teams(conn: Connection) -> list[Team]:
    """Every team, oldest first."""
    rows = conn.execute(select(teams).order_by(teams.c.created_at, teams.c.id)).all()
    return [team_from_row(r) for r in rows]


def find_key(conn: Connection, *, api_key: str) -> ApiKey | None:
    """The valid, unrevoked key ``api_key`` is, else None."""
    digest = hash_key(api_key)
    row = conn.execute(
        select(*_KEY_COLUMNS, api_keys.c.key_hash).where(
            api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
        )
    ).one_or_none()
    # The lookup is by hash, so timing reveals nothing about the key; the
    # constant-time compare guards against a collation that is not exact.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return _api_key(row)


def authenticate(conn: Connection, *, api_key: str) -> tuple[str, str] | None:
    """``(team_id, key_id)`` for a valid, unrevoked key, else None."""
    found = find_key(conn, api_key=api_key)
    return None if found is None else (found.team_id, found.id)


def needs_touch(key: ApiKey, now: datetime) -> bool:
    """Whether ``key``'s last use is older than ``LAST_USED_RESOLUTION`` (or unknown)."""
    return key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION


def touch_key(conn: Connection, *, key_id: str, now: datetime) -> bool:
    """Record a use of the key, unless one was recorded within ``LAST_USED_RESOLUTION``.

    The condition is in the ``UPDATE``: of several processes that find the
    time stale at once, the first writes and the others (which wait for its
    row lock, then read the new time) write nothing.
    """
    stale = or_(
        api_keys.c.last_used_at.is_(None),
        api_keys.c.last_used_at <= now - LAST_USED_RESOLUTION,
    )
    written = conn.execute(
        update(api_keys).where(api_keys.c.id == key_id, stale).values(last_used_at=now)
    ).rowcount
    return bool(written)
