"""Response shapes, so the OpenAPI document describes exactly what is sent.

Every field has a description and an example (tests/test_openapi.py): the
document is what an integrator reads on ``/docs`` and ``/redoc``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from contact_sync.contacts.model import Contact
from contact_sync.scheduling.eligibility import REASON_CODES

TEAM_ID = "0193a5c4-7e2b-7c41-9a3e-5d8f2b1c6e70"
CONTACT_ID = "0193a5c6-1f40-7d2a-8b6e-2c9d4e7f1a35"
COMPANY_ID = "0193a5c5-3b81-7e90-a4d2-6f1e8c3b5d27"
KEY_ID = "0193a5c4-8a12-7b3c-9d4e-1f2a3b4c5d6e"
LETTER_ID = "0193a5e1-4d2c-7a8b-9c0d-1e2f3a4b5c6d"
WHEN = "2026-11-20T15:04:05.123456+00:00"

# The ids in paths, documented once for every route that takes them.
ContactIdPath = Annotated[str, Path(description="The contact's id.", examples=[CONTACT_ID])]
CompanyIdPath = Annotated[str, Path(description="The company's id.", examples=[COMPANY_ID])]
DeadLetterIdPath = Annotated[str, Path(description="The letter's id.", examples=[LETTER_ID])]


def _limit(default: int) -> Any:
    return Field(description="The page size asked for (or the default).", examples=[default])


def _offset() -> Any:
    return Field(description="How many matches were skipped before this page.", examples=[0])


class ErrorBody(BaseModel):
    """Every error: a message, and per-field details for validation errors."""

    error: str = Field(
        description="What went wrong, in one sentence.", examples=["Validation failed"]
    )
    details: dict[str, str] | None = Field(
        default=None,
        description="Bad fields and why, at most 50 of them.",
        examples=[{"email": "Email must be a valid address"}],
    )
    details_omitted: int | None = Field(
        default=None,
        description="How many more bad fields there were than `details` lists.",
        examples=[3],
    )
    current_version: int | None = Field(
        default=None,
        description="On 412: the contact's version now, to re-read and retry against.",
        examples=[4],
    )


class ContactList(BaseModel):
    """A page of the contacts list."""

    data: list[Contact] = Field(description="The contacts of this page, in the order asked for.")
    total: int = Field(description="All matches, before pagination.", examples=[137])
    limit: int = _limit(50)
    offset: int = _offset()


class EligibleList(BaseModel):
    """A slice of the scheduler's stream; ``next_cursor`` is null at the end."""

    data: list[Contact] = Field(description="Contacts that may be called now, in stream order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next slice; null when there is none.",
        examples=["MDE5M2E1YzYtMWY0MC03ZDJh"],
    )


class ReasonOut(BaseModel):
    """Why a contact may not be called (docs/design.md §12)."""

    code: str = Field(
        description="One of the reason codes of docs/design.md §12.",
        examples=["retry_after"],
        json_schema_extra={"enum": list(REASON_CODES)},
    )
    detail: str = Field(
        description="The reason in a sentence, for a person.",
        examples=[
            "The last attempt (no_answer) ended at 2026-11-20T14:00:00Z; the next may "
            "start at 2026-11-20T18:00:00Z."
        ],
    )


class EligibilityOut(BaseModel):
    """Whether the team may call the contact at `at`, every reason why not, and from when."""

    eligible: bool = Field(description="True when no reason applies.", examples=[False])
    at: datetime = Field(
        description="The moment asked about (UTC).", examples=["2026-11-20T15:00:00Z"]
    )
    reasons: list[ReasonOut] = Field(
        description="Every reason that applies at `at` (empty when eligible).",
        examples=[
            [
                {
                    "code": "outside_window",
                    "detail": "It is 07:21 in America/New_York: "
                    "outside the window 09:00-17:00 and the 08:00-21:00 floor.",
                }
            ]
        ],
    )
    next_eligible_at: datetime | None = Field(
        description="`at` when eligible; else the earliest later instant at which the contact "
        "is eligible if nothing else happens, at most 14 days ahead; null beyond, or when "
        "do_not_call, no_phone, status_closed or max_attempts_total holds.",
        examples=["2026-11-20T18:00:00Z"],
    )


class HistoryRecord(BaseModel):
    """One change record of a contact (docs/design.md §2)."""

    id: str = Field(
        description="The record's id.", examples=["0193a5d0-2c1b-7f3e-8a9d-4b6c1e2f3a4b"]
    )
    contact_id: str = Field(description="The contact it changed.", examples=[CONTACT_ID])
    version_before: int | None = Field(
        description="The contact's version before the change; null for its creation.",
        examples=[2],
    )
    version_after: int = Field(description="The contact's version after the change.", examples=[3])
    source: str = Field(
        description="Who made the change: `api` (a person or an integration), `import` (a "
        "row of a contact import), `call` (a call event) or `suppression` (the team's "
        "do-not-call list).",
        examples=["call"],
    )
    event_id: str | None = Field(
        description="For a call: the `call.completed` event applied.", examples=["evt_7f3a9c"]
    )
    call_id: str | None = Field(description="For a call: the call's id.", examples=["call_5521"])
    api_key_id: str | None = Field(
        description="For an API write: the id of the key that made it.", examples=[KEY_ID]
    )
    occurred_at: datetime = Field(
        description="When the change happened: a call's `occurred_at`, or the write time.",
        examples=[WHEN],
    )
    recorded_at: datetime = Field(description="When the record was written.", examples=[WHEN])
    changes: list[dict[str, Any]] = Field(
        description="Each field changed: its name, old and new value; for a call's custom "
        "field converted to its defined type, also `raw`, the value as extracted.",
        examples=[
            [
                {"field": "job_title", "old": None, "new": "CTO"},
                {"field": "custom_fields.budget", "old": None, "new": 7500, "raw": "$7.5k"},
            ]
        ],
    )
    skipped: list[dict[str, Any]] = Field(
        description="Values a call carried but did not write (as received), and why: "
        "`low_confidence`, `set_by_person`, `older_than_current`, `invalid_value` (not of the "
        "field's defined type), `undefined_field` (the team rejects undefined keys), ….",
        examples=[[{"field": "job_title", "value": "CEO", "reason": "low_confidence"}]],
    )
    summary: str | None = Field(
        description="For a call: the extractor's summary of the conversation.",
        examples=["Asked for pricing; call back next week."],
    )


class HistoryList(BaseModel):
    """A page of a contact's history, newest first, and the provenance of its current values."""

    data: list[HistoryRecord] = Field(description="The records of this page, newest first.")
    total: int = Field(description="All the contact's records, before pagination.", examples=[12])
    limit: int = _limit(50)
    offset: int = _offset()
    provenance: dict[str, dict[str, Any]] = Field(
        description="For each field with a value: where the current value came from and when.",
        examples=[{"job_title": {"source": "call", "observed_at": WHEN, "call_id": "call_5521"}}],
    )


class Call(BaseModel):
    """One call of the calls ledger (docs/design.md §11): the newest event of that call."""

    id: str = Field(
        description="The row's id (kept when a re-analysis replaces the row).",
        examples=["0193a5d2-6e1f-7a2b-9c3d-4e5f6a7b8c9d"],
    )
    contact_id: str = Field(description="The contact the call applied to.", examples=[CONTACT_ID])
    call_id: str = Field(description="The call pipeline's id of the call.", examples=["call_5521"])
    event_id: str = Field(
        description="The `call.completed` event the row reflects: the newest of the call's "
        "events (`occurred_at`, then the larger `event_id`).",
        examples=["evt_7f3a9c"],
    )
    campaign_id: str | None = Field(
        description="The campaign that placed the call, or null.", examples=["camp_spring"]
    )
    direction: str = Field(
        description="`outbound` (the dialer called) or `inbound` (the person called); "
        "`outbound` when the event did not say.",
        examples=["outbound"],
        json_schema_extra={"enum": ["outbound", "inbound"]},
    )
    outcome: str = Field(
        description="`completed`, `voicemail`, `no_answer`, `busy` or `failed`.",
        examples=["no_answer"],
        json_schema_extra={"enum": ["completed", "voicemail", "no_answer", "busy", "failed"]},
    )
    duration_seconds: int | None = Field(
        description="How long the call lasted, or null.", examples=[95]
    )
    started_at: datetime | None = Field(
        description="When it started: the event's `started_at`, else `ended_at` minus the "
        "duration, else null.",
        examples=["2026-11-20T15:02:30+00:00"],
    )
    ended_at: datetime = Field(
        description="When it ended: the event's `occurred_at`.", examples=[WHEN]
    )
    phone: str | None = Field(
        description="The number called (E.164): the event's, else the contact's primary.",
        examples=["+12025551234"],
    )
    summary: str | None = Field(
        description="The extractor's summary of the conversation, or null.",
        examples=["Asked for pricing; call back next week."],
    )
    recorded_at: datetime = Field(description="When the row was last written.", examples=[WHEN])


class CallList(BaseModel):
    """A page of a contact's calls, newest first."""

    data: list[Call] = Field(
        description="The calls of this page, newest `ended_at` first (ties: the larger id)."
    )
    total: int = Field(description="All the contact's calls, before pagination.", examples=[4])
    limit: int = _limit(50)
    offset: int = _offset()


_COMPANY_NAME = Field(
    min_length=1, max_length=200, description="The company's name.", examples=["Acme Solar"]
)


class CompanyIn(BaseModel):
    """The body of a company create; any other field is 422."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    team_id: str | None = Field(
        default=None,
        description="The key's own team (the default); another is 403.",
        examples=[TEAM_ID],
    )
    name: str = _COMPANY_NAME


class CompanyPatch(BaseModel):
    """The body of a company update: its new name; any other field is 422."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = _COMPANY_NAME


class CompanyOut(BaseModel):
    """A company."""

    id: str = Field(description="The company's id, assigned by the service.", examples=[COMPANY_ID])
    team_id: str = Field(description="The team it belongs to.", examples=[TEAM_ID])
    name: str = Field(description="The company's name.", examples=["Acme Solar"])
    created_at: datetime = Field(description="When it was created (UTC).", examples=[WHEN])
    updated_at: datetime = Field(description="When it was last renamed (UTC).", examples=[WHEN])


class CompanyList(BaseModel):
    """A page of a team's companies by name."""

    data: list[CompanyOut] = Field(description="The companies of this page, by name.")
    total: int = Field(description="All matches, before pagination.", examples=[8])
    limit: int = _limit(50)
    offset: int = _offset()


class Health(BaseModel):
    """Liveness or readiness."""

    status: str = Field(description="`ok`, or `unavailable` when a check failed.", examples=["ok"])
    checks: dict[str, str] | None = Field(
        default=None,
        description="readiness: each dependency and its state.",
        examples=[{"database": "ok", "broker": "ok"}],
    )
    queue_depth: int | None = Field(
        default=None, description="readiness: messages waiting in the events queue", examples=[0]
    )
