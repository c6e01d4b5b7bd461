"""The upsert endpoints: one contact, or a batch of up to 500 (docs/design.md §14).

Each route translates the request, calls ``contacts.upsert`` in one
transaction, and translates the result; errors are mapped in ``api.errors``
(an ambiguous match or a refused duplicate number is 409 naming the contacts).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.alias_generators import to_snake
from starlette.concurrency import run_in_threadpool

from contact_sync.api.auth import CallerDep, EngineDep
from contact_sync.api.params import _bad_text, _may_hold_bad_text, json_body, parse_json, read_json
from contact_sync.api.routes import (
    _A_CONTACT,
    _body_team,
    _contact_response,
    _errors,
    _known_query_only,
)
from contact_sync.api.schemas import CONTACT_ID
from contact_sync.clock import utcnow
from contact_sync.contacts.model import Contact, ContactCreate
from contact_sync.contacts.upsert import (
    DEFAULT_MATCH_ON,
    FieldError,
    UpsertResult,
    check_match_on,
    upsert_contact,
    upsert_contacts,
)
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ValidationFailed

MAX_BATCH_ITEMS = 500
_MATCH_ON_NAMES = ("matchOn", "match_on")

router = APIRouter(prefix="/api/crm", dependencies=[Depends(_known_query_only)])

MatchKey = Literal["phone", "email"]
_MATCH_ON_DOC = (
    "The keys to match an existing contact of the team by, tried in this order; the first "
    "that matches decides. `phone`: the number (read in the team's region) against each "
    "contact's `phone` and `phone_secondary`; `email`: the address, without case."
)


class UpsertIn(ContactCreate):
    """A contact body, as for a create, and the keys to match it by."""

    match_on: list[MatchKey] = Field(
        default=["phone", "email"],
        min_length=1,
        description=_MATCH_ON_DOC,
        examples=[["phone", "email"]],
    )


class BatchUpsertIn(BaseModel):
    """Up to 500 contact bodies, applied in order, and the keys to match each by."""

    items: list[ContactCreate] = Field(
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
        description="Contact bodies as for a create; each is upserted in turn (a later item "
        "sees what an earlier one did).",
    )
    match_on: list[MatchKey] = Field(
        default=["phone", "email"],
        min_length=1,
        description=_MATCH_ON_DOC,
        examples=[["phone", "email"]],
    )


class ItemError(BaseModel):
    """One reason an item failed."""

    field: str = Field(description="The snake_case field at fault.", examples=["phone"])
    message: str = Field(
        description="What is wrong; for a 409 reason, the contacts involved.",
        examples=["Phone must be in E.164 format (+12025551234)"],
    )


class ItemResult(BaseModel):
    """What became of one item."""

    index: int = Field(description="The item's position in `items`, from 0.", examples=[0])
    status: Literal["created", "updated", "unchanged", "failed"] = Field(
        description="`created` (no match), `updated` or `unchanged` (one match), `failed` "
        "(invalid, ambiguous, or a duplicate number the team refuses: nothing written).",
        examples=["created"],
    )
    contact_id: str | None = Field(
        description="The contact created or matched; null when the item failed.",
        examples=[CONTACT_ID],
    )
    errors: list[ItemError] = Field(
        description="Why the item failed (empty otherwise), as a 422's details would say."
    )


class BatchUpsertOut(BaseModel):
    """One result per item, in item order."""

    data: list[ItemResult] = Field(description="The items' results, in item order.")


def _match_on(body: dict[str, Any]) -> tuple[str, ...]:
    """The body's ``matchOn`` (either spelling, removed from it), or the default."""
    given = [name for name in _MATCH_ON_NAMES if name in body]
    if len(given) > 1:
        raise ValidationFailed({"match_on": "Must be given once"})
    if not given:
        return DEFAULT_MATCH_ON
    return check_match_on(body.pop(given[0]))


def _batch(body: Any) -> tuple[list[Any], tuple[str, ...]]:
    """The batch body's items and keys, or a 422 naming ``items``, ``match_on`` or a stranger."""
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    body = dict(body)
    match_on = _match_on(body)
    items = body.pop("items", None)
    if body:
        raise ValidationFailed({str(name)[:64]: "Unknown field" for name in body})
    if not isinstance(items, list):
        raise ValidationFailed({"items": "Must be an array of contact bodies"})
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise ValidationFailed({"items": f"Must hold 1 to {MAX_BATCH_ITEMS} items"})
    return items, match_on


def _text_problem(item: Any) -> FieldError:
    """Why an item holding text no database stores (NUL, a lone surrogate) fails."""
    if isinstance(item, dict):
        for key, value in item.items():
            problem = _bad_text(value)
            if problem and not _bad_text(key):
                return FieldError(to_snake(key), problem)
    return FieldError("body", _bad_text(item) or "Must be valid Unicode text")


def _read_batch(raw: bytes) -> tuple[list[Any], tuple[str, ...], dict[int, FieldError]]:
    """The batch's items and keys, and the items that hold unstorable text (by index).

    ``parse_json`` refuses a whole body for one such string; here it fails its item
    alone, as any other bad value does.
    """
    if _may_hold_bad_text(raw):
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            rest = {key: value for key, value in body.items() if key != "items"}
            if not _bad_text(rest):
                bad = {i: _text_problem(x) for i, x in enumerate(body["items"]) if _bad_text(x)}
                return (*_batch(body), bad)
    return (*_batch(parse_json(raw)), {})


def _merged(results: list[UpsertResult], bad: dict[int, FieldError]) -> list[dict[str, Any]]:
    """The service's results and the items failed before it, in item order."""
    data: list[dict[str, Any]] = []
    written = iter(results)
    for index in range(len(results) + len(bad)):
        if index in bad:
            data.append(
                {"index": index, "status": "failed", "contact_id": None, "errors": [bad[index]]}
            )
            continue
        result = next(written)
        data.append(
            {
                "index": index,
                "status": result.status,
                "contact_id": result.contact_id,
                "errors": list(result.errors),
            }
        )
    for entry in data:
        entry["errors"] = [error.__dict__ for error in entry["errors"]]
    return data


@router.post(
    "/contacts/upsert",
    response_model=Contact,
    responses=_errors(403, 409, 413, 422) | {200: _A_CONTACT, 201: _A_CONTACT},
    openapi_extra=json_body(UpsertIn),
    summary="Create a contact, or update the one it matches",
    description="Matches within the team by `matchOn` (docs/design.md §14). No match: the "
    "contact is created, 201. One: it is updated with the fields sent, as a `PATCH` (200; "
    "the version moves only if something changed). Several for the deciding key: 409 "
    '`{"error": "Ambiguous match", "contact_ids": [...]}`. With the team setting '
    '`duplicate_phones: reject`, a number another contact has is 409 `{"error": '
    '"Duplicate phone", "contact_ids": [...]}`.',
)
async def upsert(request: Request, caller: CallerDep, engine: EngineDep) -> JSONResponse:
    body = await read_json(request, UpsertIn)
    team_id = _body_team(caller, body)
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    match_on = _match_on(body)

    def write() -> JSONResponse:
        with unit_of_work(engine) as uow:
            status, contact = upsert_contact(
                uow.conn,
                team_id=team_id,
                item=body,
                match_on=match_on,
                source="api",
                now=utcnow(),
                api_key_id=caller.key_id,
            )
            uow.commit()
        return _contact_response(contact, 201 if status == "created" else 200)

    return await run_in_threadpool(write)


@router.post(
    "/contacts/batch/upsert",
    response_model=BatchUpsertOut,
    responses=_errors(403, 413, 422),
    openapi_extra=json_body(BatchUpsertIn),
    summary="Upsert up to 500 contacts in order",
    description="Each item is upserted as `POST /contacts/upsert` would, in order, in one "
    "transaction: a failed item (invalid, ambiguous, a refused duplicate number, another "
    "team's company) is reported with its errors and never stops the others.",
)
async def batch_upsert(request: Request, caller: CallerDep, engine: EngineDep) -> JSONResponse:
    items, match_on, bad = await run_in_threadpool(_read_batch, await request.body())

    def write() -> JSONResponse:
        with unit_of_work(engine) as uow:
            results = upsert_contacts(
                uow.conn,
                team_id=caller.team_id,
                items=[item for index, item in enumerate(items) if index not in bad],
                match_on=match_on,
                source="api",
                now=utcnow(),
                api_key_id=caller.key_id,
            )
            uow.commit()
        return JSONResponse({"data": _merged(results, bad)})

    return await run_in_threadpool(write)
