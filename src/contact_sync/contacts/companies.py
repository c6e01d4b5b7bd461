"""Companies: a name within a team, which contacts may belong to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from contact_sync.accounts.teams import get_team
from contact_sync.clock import utcnow
from contact_sync.db.tables import companies, contacts
from contact_sync.errors import CompanyNotFound, ContactSyncError, ForbiddenTeam, ValidationFailed
from contact_sync.ids import new_id
from contact_sync.storable import is_storable_text


@dataclass(frozen=True)
class Company:
    """A company as the API returns it."""

    id: str
    team_id: str
    name: str
    created_at: datetime
    updated_at: datetime


class CompanyInUse(ContactSyncError):
    """The company cannot be deleted: ``contacts`` contacts still belong to it."""

    def __init__(self, count: int) -> None:
        super().__init__(f"Company has {count} contacts; move or delete them first")
        self.count = count


def _name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise ValidationFailed({"name": "Name must be 1 to 200 characters"})
    if not is_storable_text(name):
        raise ValidationFailed({"name": "Name must be valid Unicode text without NUL characters"})
    return name.strip()


def _company(row: Any) -> Company:
    return Company(row.id, row.team_id, row.name, row.created_at, row.updated_at)


def create_company(conn: Connection, *, team_id: str, name: object) -> Company:
    """Create a company in the team."""
    clean = _name(name)
    get_team(conn, team_id=team_id)
    now = utcnow()
    company = Company(new_id(), team_id, clean, now, now)
    conn.execute(insert(companies).values(**company.__dict__))
    return company


def get_company(conn: Connection, *, team_id: str, company_id: str, lock: bool = False) -> Company:
    """The team's company, or ``CompanyNotFound`` (also for another team's id)."""
    if "\x00" in company_id:  # PostgreSQL text cannot hold it; no id contains it
        raise CompanyNotFound(company_id)
    stmt = select(companies).where(companies.c.id == company_id, companies.c.team_id == team_id)
    row = conn.execute(stmt.with_for_update() if lock else stmt).one_or_none()
    if row is None:
        raise CompanyNotFound(company_id)
    return _company(row)


def rename_company(conn: Connection, *, team_id: str, company_id: str, name: object) -> Company:
    """Set the name of the team's company (a no-op keeps ``updated_at``)."""
    clean = _name(name)
    company = get_company(conn, team_id=team_id, company_id=company_id, lock=True)
    if company.name == clean:
        return company
    now = utcnow()
    conn.execute(
        update(companies).where(companies.c.id == company_id).values(name=clean, updated_at=now)
    )
    return Company(company.id, team_id, clean, company.created_at, now)


def delete_company(conn: Connection, *, team_id: str, company_id: str) -> None:
    """Delete the team's company; ``CompanyInUse`` while any contact belongs to it.

    Refused rather than detaching the contacts silently (the schema's ``SET NULL``
    would): a company's contacts are a list someone relies on.
    """
    get_company(conn, team_id=team_id, company_id=company_id, lock=True)
    count = conn.execute(
        select(func.count()).select_from(contacts).where(contacts.c.company_id == company_id)
    ).scalar_one()
    if count:
        raise CompanyInUse(count)
    conn.execute(delete(companies).where(companies.c.id == company_id))


def list_companies(conn: Connection, *, team_id: str) -> list[Company]:
    """All the team's companies by name."""
    return find_companies(conn, team_id=team_id).data


@dataclass(frozen=True)
class CompanyPage:
    """A page of companies and the count of all matches before pagination."""

    data: list[Company]
    total: int


def find_companies(
    conn: Connection,
    *,
    team_id: str,
    search: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> CompanyPage:
    """A page of the team's companies by name (then id), and the count of all matches."""
    where = [companies.c.team_id == team_id]
    if search:
        where.append(func.lower(companies.c.name).contains(search.lower(), autoescape=True))
    stmt = (
        select(companies)
        .where(*where)
        .order_by(companies.c.name, companies.c.id)
        .limit(limit)
        .offset(offset)
    )
    found = [_company(row) for row in conn.execute(stmt).all()]
    if offset == 0 and (limit is None or len(found) < limit):
        return CompanyPage(found, len(found))
    total = conn.execute(select(func.count()).select_from(companies).where(*where)).scalar_one()
    return CompanyPage(found, total)


def check_company(conn: Connection, *, team_id: str, company_id: str) -> None:
    """Raise unless the company exists and belongs to the team."""
    owner = conn.execute(
        select(companies.c.team_id).where(companies.c.id == company_id)
    ).scalar_one_or_none()
    if owner is None:
        raise ValidationFailed({"company_id": "Company not found"})
    if owner != team_id:
        raise ForbiddenTeam("Company does not belong to this team")
