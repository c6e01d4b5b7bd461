"""The team's calling policy over HTTP (docs/design.md §12): read it, replace it, its history.

The team is the key's own (an optional ``teamId`` naming another is 403). A
``read`` key may read the policy and its history; ``api.auth`` refuses it the
``PUT`` by method, before the body is read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from contact_sync.api.auth import Caller, CallerDep, EngineDep
from contact_sync.api.params import query_parameters, read_json, read_query
from contact_sync.api.routes import _errors
from contact_sync.api.schemas import KEY_ID, TEAM_ID, WHEN
from contact_sync.contacts.model import field_errors
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ValidationFailed
from contact_sync.scheduling.policies import get_policy, policy_changes, save_policy
from contact_sync.scheduling.policy import (
    DEFAULT_POLICY,
    CallingPolicy,
    RetryAfter,
    Weekday,
    Window,
    parse_policy,
    policy_json,
)

router = APIRouter(prefix="/api/crm", tags=["calling policy"])
POLICY = "/calling-policy"
# What a GET answers besides the policy: a body read, edited and sent back is accepted,
# these two ignored (the server sets them), so that a read-modify-write needs no pruning.
READ_ONLY_KEYS = frozenset({"updated_at", "updatedAt", "updated_by", "updatedBy"})
TEAM_KEYS = ("teamId", "team_id")


class _Query(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PolicyQuery(_Query):
    """The team only: the key's own (the default), another is 403."""

    team_id: str | None = Field(
        default=None,
        max_length=64,
        description="The key's own team (the default); another is 403.",
        examples=[TEAM_ID],
    )


class PolicyHistoryQuery(PolicyQuery):
    """A page of the policy's changes."""

    limit: int = Field(
        default=50, ge=1, le=500, description="The page size, 1 to 500.", examples=[50]
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="How many changes to skip (at most 10,000,000).",
        examples=[0],
    )


def _same(model: type[BaseModel], name: str, example: Any = None) -> Any:
    """The answer's field documented as the request's (one wording for both)."""
    info = model.model_fields[name]
    return Field(description=info.description, examples=[example] if example else info.examples)


class WindowOut(BaseModel):
    """The daily window, in the contact's local time: start inclusive, end exclusive."""

    start: str = _same(Window, "start")
    end: str = _same(Window, "end")


class RetryAfterOut(BaseModel):
    """How long after an attempt with each outcome the contact may be called again."""

    no_answer: str = _same(RetryAfter, "no_answer")
    busy: str = _same(RetryAfter, "busy")
    voicemail: str = _same(RetryAfter, "voicemail")
    failed: str = _same(RetryAfter, "failed")
    completed: str = _same(RetryAfter, "completed")


class PolicyOut(BaseModel):
    """The team's calling policy (the defaults until changed) and who changed it last."""

    window: WindowOut = _same(CallingPolicy, "window")
    days: list[Weekday] = _same(CallingPolicy, "days")
    holidays: list[str] = _same(CallingPolicy, "holidays")
    default_timezone: str = _same(CallingPolicy, "default_timezone")
    max_attempts_total: int | None = _same(CallingPolicy, "max_attempts_total")
    max_attempts_per_day: int | None = _same(CallingPolicy, "max_attempts_per_day")
    retry_after: RetryAfterOut = _same(
        CallingPolicy, "retry_after", policy_json(DEFAULT_POLICY)["retry_after"]
    )
    jurisdiction_rules: bool = _same(CallingPolicy, "jurisdiction_rules")
    updated_at: datetime | None = Field(
        description="When it was last changed (UTC); null for the defaults.", examples=[WHEN]
    )
    updated_by: str | None = Field(
        description="Who changed it last: the API key's id, or `cli:<user>`; null for the "
        "defaults.",
        examples=[KEY_ID],
    )


_POLICY_EXAMPLE = policy_json(DEFAULT_POLICY)


class PolicyChangeOut(BaseModel):
    """One change of the policy: who, when, the whole policy before and after."""

    changed_at: datetime = Field(description="When it was changed (UTC).", examples=[WHEN])
    changed_by: str | None = Field(
        description="The API key's id, or `cli:<user>`.", examples=[KEY_ID]
    )
    old: dict[str, Any] = Field(
        description="The policy before (the defaults before the first change).",
        examples=[_POLICY_EXAMPLE],
    )
    new: dict[str, Any] = Field(
        description="The policy after.",
        examples=[{**_POLICY_EXAMPLE, "max_attempts_per_day": 2}],
    )


class PolicyChangeList(BaseModel):
    """A page of the policy's changes, newest first."""

    data: list[PolicyChangeOut] = Field(description="The changes of this page, newest first.")
    total: int = Field(description="All changes, before pagination.", examples=[3])
    limit: int = Field(description="The page size asked for (or the default).", examples=[50])
    offset: int = Field(description="How many changes were skipped.", examples=[0])


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references replaced by the definitions themselves.

    A request body in ``openapi_extra`` sits inside the document, where pydantic's
    ``#/$defs/…`` references would point at nothing.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**walk(defs[ref.removeprefix("#/$defs/")]), **rest}
            return {key: walk(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def _policy_body() -> dict[str, Any]:
    schema = _inlined(CallingPolicy.model_json_schema(by_alias=True))
    schema["example"] = {"window": {"start": "10:00", "end": "18:00"}, "retryAfter": {"busy": "1h"}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _team(caller: Caller, query: dict[str, Any], body: Any = None) -> str:
    """The key's team; a ``teamId`` of another, in the query or the body, is 403."""
    named = [query.get("team_id")]
    if isinstance(body, dict):
        for key in TEAM_KEYS:
            value = body.get(key)
            if value is not None and not isinstance(value, str):
                raise ValidationFailed({"team_id": "Must be a string"})
            named.append(value)
    for team_id in named:
        caller.team(team_id)
    return caller.team_id


def _query(request: Request, model: type[_Query]) -> dict[str, Any]:
    values = read_query(request, model)
    try:
        return model.model_validate(values).model_dump()
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from exc


@router.get(
    POLICY,
    response_model=PolicyOut,
    responses=_errors(403, 422),
    openapi_extra={"parameters": query_parameters(PolicyQuery)},
    summary="The team's calling policy",
    description="The defaults (docs/design.md §12) until the team changes it; `updated_at` "
    "and `updated_by` are then when and by whom.",
)
def read_policy(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    team_id = _team(caller, _query(request, PolicyQuery))
    with unit_of_work(engine) as uow:
        stored = get_policy(uow.conn, team_id)
    return stored.to_dict()


@router.put(
    POLICY,
    response_model=PolicyOut,
    responses=_errors(403, 413, 422),
    openapi_extra={"parameters": query_parameters(PolicyQuery), **_policy_body()},
    summary="Replace the team's calling policy",
    description="The body is the whole policy; a key left out takes its default, also "
    "inside `window` and `retryAfter` (`{}` restores the defaults). A bad value or an "
    "unknown key is 422 naming it (`retry_after.busy`, `holidays.3`). `updatedAt` and "
    "`updatedBy`, as a GET answers them, are accepted and ignored. A body equal to the "
    "current policy changes nothing and adds no history. A `read` key is refused (403).",
)
async def replace_policy(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    query = _query(request, PolicyQuery)
    body = await read_json(request, CallingPolicy)
    team_id = _team(caller, query, body)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in READ_ONLY_KEYS and k not in TEAM_KEYS}

    def write() -> dict[str, Any]:
        policy = parse_policy(body)
        with unit_of_work(engine) as uow:
            stored = save_policy(uow.conn, team_id, policy, caller.key_id)
            uow.commit()
        return stored.to_dict()

    return await run_in_threadpool(write)


@router.get(
    f"{POLICY}/history",
    response_model=PolicyChangeList,
    responses=_errors(403, 422),
    openapi_extra={"parameters": query_parameters(PolicyHistoryQuery)},
    summary="The changes of the team's calling policy, newest first",
    description="One entry per change that changed something: when, who (an API key id "
    "or `cli:<user>`), and the whole policy before and after.",
)
def policy_history(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    query = _query(request, PolicyHistoryQuery)
    team_id = _team(caller, query)
    with unit_of_work(engine) as uow:
        page = policy_changes(uow.conn, team_id, limit=query["limit"], offset=query["offset"])
    return page.to_dict()
