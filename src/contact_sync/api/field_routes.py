"""The custom-field definitions and the team's settings (docs/design.md §13).

Every route is scoped to the key's team: another team's key is 404 exactly
as a key that is not defined. Bodies are validated by ``contact_sync.fields``
(the same rules as the CLI); the models here describe them in the OpenAPI
document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from contact_sync.accounts.team_settings import get_team_settings, put_team_settings
from contact_sync.api.auth import CallerDep, EngineDep
from contact_sync.api.errors import error
from contact_sync.api.params import json_body, read_json
from contact_sync.api.routes import _errors, _known_query_only
from contact_sync.api.schemas import WHEN
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.fields import store
from contact_sync.fields.definitions import (
    FIELD_TYPES,
    MAX_ALIASES,
    MAX_OPTIONS,
    AlreadyDefined,
    FieldType,
    TypeChange,
)
from contact_sync.fields.schema import extraction_schema
from contact_sync.settings import get_settings

# Unknown query parameters are refused here as on every route (api/routes.py says why).
router = APIRouter(
    prefix="/api/crm", tags=["custom fields"], dependencies=[Depends(_known_query_only)]
)
FIELDS = "/custom-fields"
ONE_FIELD = "/custom-fields/{key}"

KeyPath = Annotated[
    str, Path(description="The custom field's key (its slug).", examples=["budget"])
]


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


_OPTIONS = Field(
    default=None,
    max_length=MAX_OPTIONS,
    description=f"For select and multi_select: 1 to {MAX_OPTIONS} options, each `value` (what "
    f"is stored, 1 to 64 characters), `label` (what people read; the value by default) and "
    f"`aliases` (other words for it, at most {MAX_ALIASES}); matched without case or extra "
    "spaces. A change may add options and aliases, not remove an option.",
    examples=[[{"value": "solar", "label": "Solar", "aliases": ["pv", "solar panels"]}]],
)
_MIN = Field(default=None, description="For number and integer: the least value.", examples=[0])
_MAX = Field(
    default=None, description="For number and integer: the greatest value.", examples=[1000000]
)
_PATTERN = Field(
    default=None,
    max_length=200,
    description="For text: a regular expression the whole value must match. Backreferences, "
    "lookaround and nested or too many open repeats are refused (they could run for minutes).",
    examples=["^[A-Z]{2}-[0-9]{4,6}$"],
)
_AI = Field(
    default=True,
    description="Whether the extraction schema offers it to the call pipeline's extractor.",
    examples=[True],
)
_DESCRIPTION = Field(
    default=None,
    max_length=1000,
    description="What the field means; the extractor reads it too.",
    examples=["The customer's budget for the installation, in USD."],
)


class FieldIn(_Body):
    """The body of a definition."""

    key: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$",
        description="The custom-field key (a slug of at most 64 characters; not `schema`).",
        examples=["budget"],
    )
    label: str = Field(
        min_length=1, max_length=100, description="What people read.", examples=["Budget"]
    )
    type: FieldType = Field(description="The type of the values.", examples=["number"])
    description: str | None = _DESCRIPTION
    options: list[dict[str, Any]] | None = _OPTIONS
    min: float | None = _MIN
    max: float | None = _MAX
    pattern: str | None = _PATTERN
    ai_extractable: bool = _AI


class FieldPatch(_Body):
    """A change of a definition: only the fields given change; a change of type is 409."""

    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="What people read.",
        examples=["Budget (USD)"],
    )
    description: str | None = _DESCRIPTION
    options: list[dict[str, Any]] | None = _OPTIONS
    min: float | None = _MIN
    max: float | None = _MAX
    pattern: str | None = _PATTERN
    ai_extractable: bool | None = Field(
        default=None, description="Whether the extractor is offered it.", examples=[False]
    )


class FieldOut(BaseModel):
    """A defined custom field."""

    key: str = Field(description="The custom-field key.", examples=["budget"])
    label: str = Field(description="What people read.", examples=["Budget"])
    type: FieldType = Field(description="The type of the values.", examples=["number"])
    description: str | None = Field(
        description="What the field means.", examples=["The customer's budget, in USD."]
    )
    options: list[dict[str, Any]] | None = Field(
        description="For select and multi_select: each option's value, label and aliases.",
        examples=[[{"value": "solar", "label": "Solar", "aliases": ["pv"]}]],
    )
    min: float | None = Field(description="The least value, for numbers.", examples=[0])
    max: float | None = Field(description="The greatest value, for numbers.", examples=[None])
    pattern: str | None = Field(
        description="The pattern a text value matches.", examples=["^[A-Z]{2}-[0-9]{4,6}$"]
    )
    ai_extractable: bool = Field(
        description="Offered to the extractor by the extraction schema.", examples=[True]
    )
    created_at: datetime = Field(description="When it was defined (UTC).", examples=[WHEN])
    updated_at: datetime = Field(description="When it last changed (UTC).", examples=[WHEN])


class FieldList(BaseModel):
    """The team's definitions, oldest first."""

    data: list[FieldOut] = Field(description="Every definition of the team.")


class SettingsDoc(_Body):
    """A team's settings; a ``PUT`` sets the ones it names."""

    undefined_custom_fields: Literal["accept", "reject"] = Field(
        default="accept",
        description="Custom-field keys without a definition: `accept` (stored untyped) or "
        "`reject` (422 from the API, skipped with reason `undefined_field` from a call).",
        examples=["accept"],
    )
    min_confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="An extracted value below this confidence is skipped; null: the "
        "service's default (0.5).",
        examples=[0.5],
    )
    calls_overwrite_people: bool = Field(
        default=False,
        description="Whether a call may replace a value a person set.",
        examples=[False],
    )
    duplicate_phones: Literal["allow", "reject"] = Field(
        default="allow",
        description="Two contacts with one number: `allow`, or `reject` (409 `Duplicate phone` "
        "from a create, update or upsert that would give a contact another's number).",
        examples=["allow"],
    )


class SettingsOut(BaseModel):
    """A team's settings."""

    undefined_custom_fields: Literal["accept", "reject"] = Field(
        description="Custom-field keys without a definition: accepted or rejected.",
        examples=["accept"],
    )
    min_confidence: float = Field(
        description="Extracted values below this confidence are skipped.", examples=[0.5]
    )
    calls_overwrite_people: bool = Field(
        description="Whether a call may replace a value a person set.", examples=[False]
    )
    duplicate_phones: Literal["allow", "reject"] = Field(
        description="Two contacts with one number: allowed, or refused with 409.",
        examples=["allow"],
    )


def _default_confidence(request: Request) -> float:
    settings = getattr(request.app.state, "settings", None) or get_settings()
    return float(settings.min_confidence)


@router.post(
    FIELDS,
    status_code=201,
    response_model=FieldOut,
    responses=_errors(409, 413),
    openapi_extra=json_body(FieldIn),
    summary="Define a custom field",
    description=f"Types: {', '.join(FIELD_TYPES)}. A key defined already is 409. Values "
    "stored before are not rewritten.",
)
async def define_field(request: Request, caller: CallerDep, engine: EngineDep) -> Any:
    body = await read_json(request, FieldIn)

    def write() -> Any:
        try:
            with unit_of_work(engine) as uow:
                stored = store.define(uow.conn, team_id=caller.team_id, data=body)
                uow.commit()
        except AlreadyDefined as exc:
            return error(409, str(exc))
        shown = FieldOut.model_validate(stored.to_dict()).model_dump(mode="json")
        return JSONResponse(shown, status_code=201)  # as the reads render it

    return await run_in_threadpool(write)


@router.get(FIELDS, response_model=FieldList, responses=_errors(), summary="The team's fields")
def list_fields(caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    with unit_of_work(engine) as uow:
        found = store.list_definitions(uow.conn, team_id=caller.team_id)
    return {"data": [item.to_dict() for item in found]}


@router.get(
    f"{FIELDS}/schema",
    responses=_errors() | {200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    summary="The extraction schema of the team's aiExtractable fields",
    description="A JSON Schema (draft 2020-12) of `extraction.custom_fields`: each "
    "`aiExtractable` field's type, options, bounds, pattern and description, null allowed "
    "(not found in the call). Hand it to the call pipeline's extractor.",
)
def field_schema(caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    with unit_of_work(engine) as uow:
        found = store.list_definitions(uow.conn, team_id=caller.team_id)
    return extraction_schema(item.definition for item in found)


@router.get(ONE_FIELD, response_model=FieldOut, responses=_errors(404), summary="A field")
def get_field(key: KeyPath, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    with unit_of_work(engine) as uow:
        return store.get_definition(uow.conn, team_id=caller.team_id, key=key).to_dict()


@router.patch(
    ONE_FIELD,
    response_model=FieldOut,
    responses=_errors(404, 409, 413),
    openapi_extra=json_body(FieldPatch),
    summary="Change a field's label, description, options, bounds, pattern or aiExtractable",
    description="A change of `type` is 409: stored values would change meaning. Options may "
    "be added and given aliases, not removed.",
)
async def patch_field(key: KeyPath, request: Request, caller: CallerDep, engine: EngineDep) -> Any:
    body = await read_json(request, FieldPatch)

    def write() -> Any:
        try:
            with unit_of_work(engine) as uow:
                stored = store.change(uow.conn, team_id=caller.team_id, key=key, data=body)
                uow.commit()
        except TypeChange as exc:
            return error(409, str(exc))
        return stored.to_dict()

    return await run_in_threadpool(write)


@router.delete(
    ONE_FIELD,
    status_code=204,
    responses=_errors(404),
    summary="Delete a field's definition",
    description="The contacts' values stay, untyped.",
)
def delete_field(key: KeyPath, caller: CallerDep, engine: EngineDep) -> Response:
    with unit_of_work(engine) as uow:
        store.remove(uow.conn, team_id=caller.team_id, key=key)
        uow.commit()
    return Response(status_code=204)


@router.get(
    "/team-settings", response_model=SettingsOut, responses=_errors(), summary="Team settings"
)
def team_settings(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    with unit_of_work(engine) as uow:
        found = get_team_settings(
            uow.conn, team_id=caller.team_id, default_min_confidence=_default_confidence(request)
        )
    return found.to_dict()


@router.put(
    "/team-settings",
    response_model=SettingsOut,
    responses=_errors(413),
    openapi_extra=json_body(SettingsDoc),
    summary="Set team settings",
    description="Sets the settings the body names; the others keep their values. "
    "`minConfidence: null` goes back to the service's default.",
)
async def put_settings(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    body = await read_json(request, SettingsDoc)
    default = _default_confidence(request)

    def write() -> dict[str, Any]:
        with unit_of_work(engine) as uow:
            found = put_team_settings(
                uow.conn, team_id=caller.team_id, data=body, default_min_confidence=default
            )
            uow.commit()
        return found.to_dict()

    return await run_in_threadpool(write)
