"""Companies: a name within a team, which contacts may belong to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from contact_sync.clock import utcnow
from contact_sync.db.tables import companies
from contact_sync.errors import ForbiddenTeam, ValidationFailed
from contact_sync.ids import new_id
from contact_sync.storable import is_storable_text
from contact_sync.teams import get_team


@dataclass(frozen=True)
class Company:
    """A company as the API returns it."""

    id: str
    team_id: str
    name: str
    created_at: datetime
    updated_at: datetime


def create_company(conn: Connection, *, team_id: str, name: object) -> Company:
    """Create a company in the team."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise ValidationFailed({"name": "Name must be 1 to 200 characters"})
    if not is_storable_text(name):
        raise ValidationFailed({"name": "Name must be valid Unicode text without NUL characters"})
    get_team(conn, team_id=team_id)
    now = utcnow()
    company = Company(new_id(), team_id, name.strip(), now, now)
    conn.execute(insert(companies).values(**company.__dict__))
    return company


def list_companies(conn: Connection, *, team_id: str) -> list[Company]:
    """The team's companies by name."""
    rows = conn.execute(
        select(companies).where(companies.c.team_id == team_id).order_by(companies.c.name)
    ).all()
    return [Company(r.id, r.team_id, r.name, r.created_at, r.updated_at) for r in rows]


def check_company(conn: Connection, *, team_id: str, company_id: str) -> None:
    """Raise unless the company exists and belongs to the team."""
    owner = conn.execute(
        select(companies.c.team_id).where(companies.c.id == company_id)
    ).scalar_one_or_none()
    if owner is None:
        raise ValidationFailed({"company_id": "Company not found"})
    if owner != team_id:
        raise ForbiddenTeam("Company does not belong to this team")
