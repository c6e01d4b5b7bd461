"""The dead-letter endpoints: a team's parked events, their replay and discard.

Every route is scoped to the key's team: a letter of another team, or one
whose team could not be read from its payload (operators see those with
``contact-sync dead-letters``), is 404 exactly as an id that does not exist.
Replay takes the CLI's path (``contact_sync.ops.replays``); a ``read`` key is
refused both writes by ``api.auth``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from contact_sync.api.auth import Caller, CallerDep, EngineDep
from contact_sync.api.params import query_parameters, read_query
from contact_sync.api.routes import _errors
from contact_sync.api.schemas import (
    CONTACT_ID,
    KEY_ID,
    LETTER_ID,
    TEAM_ID,
    WHEN,
    DeadLetterIdPath,
)
from contact_sync.calls.events import EventOutcome, Reason
from contact_sync.clock import utcnow
from contact_sync.contacts.model import field_errors
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ValidationFailed
from contact_sync.ops import replays
from contact_sync.ops.dead_letters import (
    ClosedLetter,
    DeadLetter,
    DeadLetterNotFound,
    Via,
    discard,
    get_dead_letter,
    page_dead_letters,
)
from contact_sync.settings import Settings, get_settings

router = APIRouter(prefix="/api/crm", tags=["dead letters"])
LETTERS = "/dead-letters"
ONE_LETTER = "/dead-letters/{dead_letter_id}"
NOT_FOUND = "Dead letter not found"
# A letter holds its payload (up to 256 KiB): a page is at most 100 of them.
MAX_LIMIT = 100


class _Query(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class DeadLetterQuery(_Query):
    """Filters of a team's dead letters; unset filters match everything."""

    team_id: str | None = Field(
        default=None,
        max_length=64,
        description="The key's own team (the default); another is 403.",
        examples=[TEAM_ID],
    )
    reason: Reason | None = Field(
        default=None,
        description="Only letters parked for this reason.",
        examples=["contact_not_found"],
    )
    open: StrictBool | None = Field(
        default=None,
        description="`true`: neither replayed successfully nor discarded; `false`: closed.",
        examples=[True],
    )
    limit: int = Field(
        default=50, ge=1, le=MAX_LIMIT, description="The page size, 1 to 100.", examples=[50]
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="How many letters to skip (at most 10,000,000).",
        examples=[0],
    )


class TeamQuery(_Query):
    """The item routes take the team only (the key's own, or 403)."""

    team_id: str | None = Field(
        default=None,
        max_length=64,
        description="The key's own team (the default); another is 403.",
        examples=[TEAM_ID],
    )


class Attempt(BaseModel):
    """One delivery or replay of the letter's event."""

    at: datetime = Field(description="When it happened (UTC).", examples=[WHEN])
    via: Via = Field(description="A delivery from the queue, or a replay.", examples=["replay"])
    outcome: EventOutcome = Field(
        description="`dead_lettered`, or for a replay `applied`, `no_change` or `duplicate`.",
        examples=["applied"],
    )
    reason: Reason | None = Field(
        description="Why it was parked, when it was.", examples=["contact_not_found"]
    )
    message: str | None = Field(
        description="The problem in words, when it was parked.",
        examples=["no contact 0193a5c6-1f40-7d2a-8b6e-2c9d4e7f1a35 in this team"],
    )
    by: str | None = Field(
        description="Who replayed: an API key id, or `cli:<user>`.", examples=[KEY_ID]
    )


class DeadLetterOut(BaseModel):
    """A parked event, its reason and its payload exactly as received."""

    id: str = Field(description="The letter's id.", examples=[LETTER_ID])
    event_id: str | None = Field(
        description="The event's `event_id`, when the payload had a readable one.",
        examples=["evt_7f3a9c"],
    )
    team_id: str | None = Field(description="The event's team.", examples=[TEAM_ID])
    reason: Reason = Field(
        description="Why it is parked: the latest reason (the first is in `attempt_log`).",
        examples=["contact_not_found"],
    )
    message: str = Field(
        description="The problem in words.",
        examples=["no contact 0193a5c6-1f40-7d2a-8b6e-2c9d4e7f1a35 in this team"],
    )
    payload: Any = Field(
        description="The event as received (its first 256 KiB and size when larger); after "
        "erasure, a tombstone.",
        examples=[{"event_id": "evt_7f3a9c", "type": "call.completed", "schema_version": 1}],
    )
    first_seen_at: datetime = Field(description="When it was first parked (UTC).", examples=[WHEN])
    last_seen_at: datetime = Field(
        description="When it was last delivered or replayed (UTC).", examples=[WHEN]
    )
    attempts: int = Field(description="How many times it was delivered and parked.", examples=[1])
    replayed_at: datetime | None = Field(
        description="When a replay went through, which closed it.", examples=[None]
    )
    erased_at: datetime | None = Field(
        description="When its contact was deleted and its payload erased.", examples=[None]
    )
    discarded_at: datetime | None = Field(
        description="When it was discarded, which closed it.", examples=[WHEN]
    )
    discarded_by: str | None = Field(
        description="The API key id, or `cli:<user>`.", examples=[KEY_ID]
    )
    attempt_log: list[Attempt] = Field(
        description="Each delivery and replay, oldest first (the first and latest 49 kept)."
    )
    open: bool = Field(description="Neither replayed successfully nor discarded.", examples=[False])


class DeadLetterList(BaseModel):
    """A page of a team's dead letters, newest first."""

    data: list[DeadLetterOut] = Field(description="The letters of this page, newest first.")
    total: int = Field(description="All matches, before pagination.", examples=[3])
    limit: int = Field(description="The page size asked for (or the default).", examples=[50])
    offset: int = Field(description="How many matches were skipped.", examples=[0])


class ReplayOut(BaseModel):
    """What a replay did to the event, and the letter afterwards."""

    outcome: EventOutcome = Field(
        description="What the replay did: `dead_lettered` when it is still parked.",
        examples=["applied"],
    )
    reason: Reason | None = Field(
        description="Why it is still parked, when it is.", examples=[None]
    )
    message: str | None = Field(
        description="The problem in words, when it is still parked.", examples=[None]
    )
    contact_id: str | None = Field(
        description="The contact the event applied to.", examples=[CONTACT_ID]
    )
    version: int | None = Field(description="The contact's version after the replay.", examples=[4])
    dead_letter: DeadLetterOut = Field(description="The letter after the replay.")


def _read(request: Request, model: type[_Query]) -> dict[str, Any]:
    """The query's known parameters; an unknown one is 422 naming it (a typo must not
    silently widen a list)."""
    known = {spelling for name in model.model_fields for spelling in (name, to_camel(name))}
    unknown = {
        name: "Unknown query parameter" for name in request.query_params if name not in known
    }
    if unknown:
        raise ValidationFailed(unknown)
    values = read_query(request, model)
    try:
        return model.model_validate(values).model_dump()
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from exc


def _team(request: Request, caller: Caller) -> str:
    return caller.team(_read(request, TeamQuery)["team_id"])


async def _no_body(request: Request) -> None:
    """These actions take no body: one is refused rather than silently ignored."""
    raw = (await request.body()).strip()
    if raw not in (b"", b"{}"):
        raise ValidationFailed({"body": "Must be empty: this request takes no body"})


def _settings(request: Request) -> Settings:
    found: Settings | None = getattr(request.app.state, "settings", None)
    return found or get_settings()


def _letter(letter: DeadLetter) -> dict[str, Any]:
    return letter.to_dict()


@router.get(
    LETTERS,
    response_model=DeadLetterList,
    responses=_errors(403, 422),
    openapi_extra={"parameters": query_parameters(DeadLetterQuery)},
    summary="List the team's dead letters, newest first",
)
def list_letters(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    query = _read(request, DeadLetterQuery)
    team_id = caller.team(query["team_id"])
    with unit_of_work(engine) as uow:
        page = page_dead_letters(
            uow.conn,
            team_id=team_id,
            reason=query["reason"],
            is_open=query["open"],
            limit=query["limit"],
            offset=query["offset"],
        )
    return page.to_dict()


@router.get(
    ONE_LETTER,
    response_model=DeadLetterOut,
    responses=_errors(403, 404),
    openapi_extra={"parameters": query_parameters(TeamQuery)},
    summary="Get a dead letter",
)
def get_letter(
    dead_letter_id: DeadLetterIdPath, request: Request, caller: CallerDep, engine: EngineDep
) -> dict[str, Any]:
    team_id = _team(request, caller)
    with unit_of_work(engine) as uow:
        letter = get_dead_letter(uow.conn, dead_letter_id=dead_letter_id, team_id=team_id)
    if letter is None:
        raise HTTPException(404, NOT_FOUND)
    return _letter(letter)


@router.post(
    f"{ONE_LETTER}/replay",
    response_model=ReplayOut,
    responses=_errors(403, 404, 409, 413),
    openapi_extra={"parameters": query_parameters(TeamQuery)},
    summary="Apply a dead letter's event again",
    description="The same apply path as a delivery: the letter is closed when the event now "
    "goes through, else it stays open with the new reason. Either way the replay is added to "
    "its `attempt_log`, which keeps the reason it was first parked for. An erased letter (its "
    "contact was deleted) or a discarded one is refused with 409. The answer is 200 whatever "
    "the outcome: `outcome` says it.",
)
async def replay_letter(
    dead_letter_id: DeadLetterIdPath, request: Request, caller: CallerDep, engine: EngineDep
) -> dict[str, Any]:
    team_id = _team(request, caller)
    await _no_body(request)
    min_confidence = _settings(request).min_confidence

    def write() -> dict[str, Any]:
        try:
            with unit_of_work(engine) as uow:
                done = replays.replay_letter(
                    uow.conn,
                    dead_letter_id=dead_letter_id,
                    team_id=team_id,
                    by=caller.key_id,
                    now=utcnow(),
                    min_confidence=min_confidence,
                )
                uow.commit()
        except DeadLetterNotFound:
            raise HTTPException(404, NOT_FOUND) from None
        except ClosedLetter as exc:
            raise HTTPException(409, str(exc)) from None
        return {
            "outcome": done.outcome.outcome,
            "reason": done.outcome.reason,
            "message": done.outcome.message,
            "contact_id": done.outcome.contact_id,
            "version": done.outcome.version,
            "dead_letter": _letter(done.letter),
        }

    return await run_in_threadpool(write)


@router.post(
    f"{ONE_LETTER}/discard",
    response_model=DeadLetterOut,
    responses=_errors(403, 404, 409, 413),
    openapi_extra={"parameters": query_parameters(TeamQuery)},
    summary="Close a dead letter without applying it",
    description="The letter is kept, closed with who (this API key's id) and when. "
    "Discarding it again changes nothing and answers the same; a letter whose replay went "
    "through is 409.",
)
async def discard_letter(
    dead_letter_id: DeadLetterIdPath, request: Request, caller: CallerDep, engine: EngineDep
) -> dict[str, Any]:
    team_id = _team(request, caller)
    await _no_body(request)

    def write() -> dict[str, Any]:
        try:
            with unit_of_work(engine) as uow:
                letter = discard(
                    uow.conn,
                    dead_letter_id=dead_letter_id,
                    team_id=team_id,
                    by=caller.key_id,
                    now=utcnow(),
                )
                uow.commit()
        except DeadLetterNotFound:
            raise HTTPException(404, NOT_FOUND) from None
        except ClosedLetter as exc:
            raise HTTPException(409, str(exc)) from None
        return _letter(letter)

    return await run_in_threadpool(write)
