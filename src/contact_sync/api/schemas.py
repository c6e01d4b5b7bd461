"""Response shapes, so the OpenAPI document describes exactly what is sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from contact_sync.contacts import Contact


class ErrorBody(BaseModel):
    """Every error: a message, and per-field details for validation errors."""

    error: str
    details: dict[str, str] | None = Field(
        default=None, description="Bad fields and why, at most 50 of them."
    )
    details_omitted: int | None = Field(
        default=None, description="How many more bad fields there were than `details` lists."
    )
    current_version: int | None = None


class ContactList(BaseModel):
    """A page of the contacts list."""

    data: list[Contact]
    total: int
    limit: int
    offset: int


class EligibleList(BaseModel):
    """A slice of the scheduler's stream; ``next_cursor`` is null at the end."""

    data: list[Contact]
    next_cursor: str | None


class HistoryRecord(BaseModel):
    """One change record of a contact (DESIGN §2)."""

    id: str
    contact_id: str
    version_before: int | None
    version_after: int
    source: str
    event_id: str | None
    call_id: str | None
    api_key_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    changes: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    summary: str | None


class HistoryList(BaseModel):
    """A page of a contact's history, newest first, and the provenance of its current values."""

    data: list[HistoryRecord]
    total: int = Field(description="All the contact's records, before pagination.")
    limit: int
    offset: int
    provenance: dict[str, dict[str, Any]]


class CompanyIn(BaseModel):
    """The body of a company create; any other field is 422."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    team_id: str | None = None
    name: str = Field(min_length=1, max_length=200)


class CompanyPatch(BaseModel):
    """The body of a company update: its new name; any other field is 422."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class CompanyOut(BaseModel):
    """A company."""

    id: str
    team_id: str
    name: str
    created_at: datetime
    updated_at: datetime


class CompanyList(BaseModel):
    """A page of a team's companies by name."""

    data: list[CompanyOut]
    total: int = Field(description="All matches, before pagination.")
    limit: int
    offset: int


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    checks: dict[str, str] | None = None
    queue_depth: int | None = Field(
        default=None, description="readiness: messages waiting in the events queue"
    )
