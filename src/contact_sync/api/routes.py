"""The contacts and companies endpoints (docs/design.md §7).

Each route translates the request, calls one service in one transaction,
and translates the result; errors are mapped in ``api.errors``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.alias_generators import to_snake
from starlette.concurrency import run_in_threadpool

from contact_sync.api.auth import Caller, CallerDep, EngineDep
from contact_sync.api.errors import error
from contact_sync.api.params import (
    json_body,
    query_parameters,
    read_json,
    read_query,
    reject_unknown_query,
)
from contact_sync.api.schemas import (
    CallList,
    CompanyIdPath,
    CompanyIn,
    CompanyList,
    CompanyOut,
    CompanyPatch,
    ContactIdPath,
    ContactList,
    EligibilityOut,
    EligibleList,
    ErrorBody,
    HistoryList,
)
from contact_sync.calls.ledger_store import count_calls, list_calls
from contact_sync.clock import utcnow
from contact_sync.contacts.companies import (
    CompanyInUse,
    create_company,
    delete_company,
    find_companies,
    get_company,
    rename_company,
)
from contact_sync.contacts.custom_filters import filter_definitions
from contact_sync.contacts.model import LEAD_STATUS_SCHEMA, Contact, ContactCreate, ContactPatch
from contact_sync.contacts.query import (
    SORTS,
    CompanyQuery,
    ContactQuery,
    EligibilityQuery,
    EligibleQuery,
    HistoryQuery,
    list_contacts,
    list_eligible,
)
from contact_sync.contacts.store import (
    count_history,
    create_contact,
    delete_contact,
    get_contact,
    list_history,
    update_contact,
)
from contact_sync.contacts.store import get_provenance as contact_provenance
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import ValidationFailed
from contact_sync.fields.filters import PREFIX
from contact_sync.scheduling.check import contact_eligibility


def _dependant_query(dependant: Dependant) -> set[str]:
    """The names of the query parameters FastAPI itself reads for a route (if any)."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _dependant_query(sub)
    return names


def _declared_query(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` documents (both spellings), and no others."""
    names = {
        param["name"]
        for param in (route.openapi_extra or {}).get("parameters", [])
        if param.get("in") == "query"
    }
    names |= _dependant_query(route.dependant)
    return frozenset(names | {to_snake(name) for name in names})


def _known_query_only(request: Request, _: CallerDep) -> None:
    """Every route refuses a query parameter it does not document (after the key check).

    Ignored, ``?tag=vip`` listed every contact and a campaign called the wrong people.
    """
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        reject_unknown_query(request, _declared_query(route), _prefixes(route))


def _prefixes(route: APIRoute) -> tuple[str, ...]:
    """The parameter-name prefixes a route reads: ``cf.`` on the contacts list and stream."""
    return (PREFIX,) if route.path in _CUSTOM_FILTERED else ()


router = APIRouter(prefix="/api/crm", dependencies=[Depends(_known_query_only)])
# The cf. filters' names are the team's own keys, so they are documented in words.
_CF_DOCS = (
    "Custom-field filters (docs/design.md §13), on the team's defined fields and combined with "
    "every other filter by AND: `cf.KEY=VALUE` (typed equality; a multi_select contains it), "
    "`cf.KEY.in=a,b` (any of them, at most 100), `cf.KEY.gte|gt|lte|lt=VALUE` (number, integer, "
    "date, datetime), `cf.KEY.exists=true|false` (has a value of the field's type). Values are "
    "coerced as the field's writes are (`cf.budget.gte=$5k`, `cf.product=Solar panels`); a value "
    "that does not convert, an undefined key or an operator the type has not is 422 naming the "
    "parameter. At most 10 a request. Example: `?cf.budget.gte=5000&cf.homeowner=true`."
)
_CUSTOM_FILTERED = frozenset({"/api/crm/contacts", "/api/crm/contacts/eligible"})


_RATE_LIMITED = {
    "model": ErrorBody,
    "description": "This API key's rate limit is exceeded.",
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before the next request is accepted.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    # 422 is always listed so that FastAPI's own HTTPValidationError shape,
    # which this API never sends, does not appear in the document.
    answers: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody} for code in (401, *codes, 422)
    }
    return answers | {429: _RATE_LIMITED}


def _operation(method: str, path: str) -> str:
    """An ``operationRef`` to an operation of this document (a JSON pointer, as in the spec)."""
    return f"#/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}"


# OpenAPI links: what a client can do next with the ids an answer gives it.
# They document the API's flows and drive Schemathesis' stateful tests
# (tests/test_api_stateful.py), which chain real ids instead of guessing them.
_ONE_CONTACT = f"{router.prefix}/contacts/{{contact_id}}"
_THIS_CONTACT = {"contact_id": "$response.body#/id"}
_CONTACT_LINKS: dict[str, Any] = {
    "GetContact": {
        "operationRef": _operation("get", _ONE_CONTACT),
        "parameters": _THIS_CONTACT,
        "description": "Read this contact again.",
    },
    "UpdateContact": {
        "operationRef": _operation("patch", _ONE_CONTACT),
        "parameters": {**_THIS_CONTACT, "header.If-Match": "$response.header.ETag"},
        "description": "Update this contact, only if it is still at the version this answer's "
        "`ETag` names.",
    },
    "DeleteContact": {
        "operationRef": _operation("delete", _ONE_CONTACT),
        "parameters": _THIS_CONTACT,
        "description": "Delete this contact.",
    },
    "GetContactHistory": {
        "operationRef": _operation("get", f"{_ONE_CONTACT}/history"),
        "parameters": _THIS_CONTACT,
        "description": "This contact's change history.",
    },
    "GetContactCalls": {
        "operationRef": _operation("get", f"{_ONE_CONTACT}/calls"),
        "parameters": _THIS_CONTACT,
        "description": "This contact's calls, newest first.",
    },
    "ListTeamContacts": {
        "operationRef": _operation("get", f"{router.prefix}/contacts"),
        "parameters": {"teamId": "$response.body#/team_id"},
        "description": "The contacts of this contact's team.",
    },
    "ListCompanyContacts": {
        "operationRef": _operation("get", f"{router.prefix}/contacts"),
        "parameters": {"companyId": "$response.body#/company_id"},
        "description": "The contacts of this contact's company, if it has one.",
    },
}
_COMPANY_LINKS: dict[str, Any] = {
    "ListCompanyContacts": {
        "operationRef": _operation("get", f"{router.prefix}/contacts"),
        "parameters": {"companyId": "$response.body#/id"},
        "description": "The contacts of this company.",
    },
    "ListTeamCompanies": {
        "operationRef": _operation("get", f"{router.prefix}/companies"),
        "parameters": {"teamId": "$response.body#/team_id"},
        "description": "The companies of this company's team.",
    },
    "CreateContactInCompany": {
        "operationRef": _operation("post", f"{router.prefix}/contacts"),
        "requestBody": {"companyId": "$response.body#/id"},
        "description": "Create a contact of this company (its id as the body's `companyId`).",
    },
}
# The next slice of the eligible stream: the same query, from the cursor on.
_ELIGIBLE_LINKS: dict[str, Any] = {
    "NextEligiblePage": {
        "operationRef": _operation("get", f"{router.prefix}/contacts/eligible"),
        "parameters": {
            "cursor": "$response.body#/next_cursor",
            **{
                name: f"$request.query.{name}"
                for name in ("teamId", "at", "windowStart", "windowEnd", "defaultTimezone", "limit")
            },
        },
        "description": "The next slice (absent at the end, when `next_cursor` is null).",
    }
}
_ETAG = {
    "ETag": {
        "description": "The contact's version, quoted: the `If-Match` of a later update.",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    }
}
# The answers that carry one contact: its links and its ETag.
_A_CONTACT = {"links": _CONTACT_LINKS, "headers": _ETAG}


def _body_team(caller: Caller, body: Any) -> str:
    """The key's team; a body naming another in either spelling is 403.

    Both spellings are checked: ``{"teamId": null, "team_id": "<other>"}`` must not
    pass because the first one it looked at was empty.
    """
    if isinstance(body, dict):
        for name in ("teamId", "team_id"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise ValidationFailed({"team_id": "Must be a string"})
            caller.team(value)
    return caller.team_id


def _docs(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The description and examples of a query model's field, for a schema written by hand."""
    info = model.model_fields[name]
    return {"description": info.description, "examples": info.examples}


# Query parameters whose wire format the models' JSON Schema cannot tell.
_CLOCK = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
_ELIGIBLE_OVERRIDES = {
    "window_start": {**_CLOCK, **_docs(EligibleQuery, "window_start")},
    "window_end": {**_CLOCK, **_docs(EligibleQuery, "window_end")},
}
_ELIGIBLE_MESSAGES = dict.fromkeys(_ELIGIBLE_OVERRIDES, "Must be a time of day as HH:MM")
_LIST_OVERRIDES: dict[str, dict[str, Any]] = {
    "tag": {
        "type": "array",
        # Not blank after trimming (Python's whitespace, ECMA's \s and more).
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": r"[^\s\x1c-\x1f\x85]",
        },
        "maxItems": 20,
        **_docs(ContactQuery, "tag"),
    },
    "sort": {
        "type": "string",
        "enum": list(SORTS),
        "default": SORTS[0],
        **_docs(ContactQuery, "sort"),
    },
    "lead_status": {
        "type": "string",
        "pattern": "^[A-Za-z0-9][A-Za-z0-9_ -]{0,63}$",
        **LEAD_STATUS_SCHEMA,
        **_docs(ContactQuery, "lead_status"),
        "description": "Only contacts with this status: a known one or any other slug; case, "
        "spaces and hyphens are normalised (`Do Not Contact` is `do_not_contact`).",
    },
}
_LIST_MESSAGES = {"lead_status": "Lead status must be a slug such as qualified"}
_ONE_COMPANY = f"{router.prefix}/companies/{{company_id}}"


def _contact_response(contact: Contact, status: int = 200) -> JSONResponse:
    return JSONResponse(
        contact.model_dump(mode="json"),
        status_code=status,
        headers={"ETag": f'"{contact.version}"'},
    )


@router.post(
    "/contacts",
    status_code=201,
    response_model=Contact,
    responses=_errors(403, 413, 422) | {201: _A_CONTACT},
    openapi_extra=json_body(ContactCreate),
    summary="Create a contact",
)
async def create(request: Request, caller: CallerDep, engine: EngineDep) -> JSONResponse:
    body = await read_json(request, ContactCreate)
    team_id = _body_team(caller, body)

    def write() -> JSONResponse:
        with unit_of_work(engine) as uow:
            contact = create_contact(uow.conn, team_id=team_id, data=body, api_key_id=caller.key_id)
            uow.commit()
        return _contact_response(contact, 201)

    # Validation, database work and rendering leave the event loop, as in the sync routes.
    return await run_in_threadpool(write)


@router.get(
    "/contacts",
    response_model=ContactList,
    responses=_errors(403, 422),
    openapi_extra={"parameters": query_parameters(ContactQuery, overrides=_LIST_OVERRIDES)},
    summary="List contacts with filters",
    description="Newest first by default, with the exact `total`. " + _CF_DOCS,
)
def list_(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    values = read_query(
        request,
        ContactQuery,
        overrides=_LIST_OVERRIDES,
        messages=_LIST_MESSAGES,
        prefixes=(PREFIX,),
    )
    values["team_id"] = caller.team(values.get("team_id"))
    with unit_of_work(engine) as uow:
        definitions, region = filter_definitions(uow.conn, values["team_id"], values)
        query = ContactQuery.parse(values, definitions=definitions, region=region)
        return list_contacts(uow.conn, query).to_dict()


@router.get(
    "/contacts/eligible",
    response_model=EligibleList,
    responses=_errors(403, 422) | {200: {"links": _ELIGIBLE_LINKS}},
    openapi_extra={"parameters": query_parameters(EligibleQuery, overrides=_ELIGIBLE_OVERRIDES)},
    summary="Contacts the campaign scheduler may call at `at` (default: now)",
    description="Exactly the contacts whose eligibility (`GET /contacts/{contact_id}/eligibility`) "
    "is true at `at`: the team's calling policy, the 08:00-21:00 local floor, the shipped "
    "jurisdiction rules, attempts, caps and retry delays (docs/design.md §12). `windowStart`, "
    "`windowEnd` and `defaultTimezone` override the policy for this query only. Keyset-paginated "
    "by id; the cursor carries the walk's `at`; pass the same `cf.` filters with it. " + _CF_DOCS,
)
def eligible(request: Request, caller: CallerDep, engine: EngineDep) -> Response:
    values = read_query(
        request,
        EligibleQuery,
        overrides=_ELIGIBLE_OVERRIDES,
        messages=_ELIGIBLE_MESSAGES,
        prefixes=(PREFIX,),
    )
    values["team_id"] = caller.team(values.get("team_id"))
    with unit_of_work(engine) as uow:
        definitions, region = filter_definitions(uow.conn, values["team_id"], values)
        query = EligibleQuery.parse(values, definitions=definitions, region=region)
        # The page's JSON text as written (on PostgreSQL, by the database): no Contact
        # object per row, nothing parsed again (contacts/query.EligiblePage).
        body = list_eligible(uow.conn, query).to_json()
        # Ended by a commit (it wrote nothing): psycopg forgets a connection's prepared
        # statements at every ROLLBACK, and the stream's statement needs its prepared,
        # generic plan (an index walk in id order); a fresh plan each time sorts the team.
        uow.commit()
        return Response(body, media_type="application/json")


@router.get(
    "/contacts/{contact_id}",
    response_model=Contact,
    responses=_errors(404) | {200: _A_CONTACT},
    summary="Get a contact",
)
def get(contact_id: ContactIdPath, caller: CallerDep, engine: EngineDep) -> JSONResponse:
    with unit_of_work(engine) as uow:
        contact = get_contact(uow.conn, team_id=caller.team_id, contact_id=contact_id)
    return _contact_response(contact)


def _version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    # ASCII only: "²" is a digit to isdigit() but not to int().
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise ValidationFailed({"if_match": "If-Match must be a contact version such as 3"})
    return int(text)


@router.patch(
    "/contacts/{contact_id}",
    response_model=Contact,
    responses=_errors(403, 404, 412, 413, 422) | {200: _A_CONTACT},
    openapi_extra=json_body(ContactPatch),
    summary="Update some fields of a contact",
)
async def patch(
    contact_id: ContactIdPath,
    request: Request,
    caller: CallerDep,
    engine: EngineDep,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description="The version this update is based on, quoted (the `ETag` of a read): "
            "412 if the contact has moved on.",
            examples=['"3"'],
        ),
    ] = None,
) -> JSONResponse:
    expected = _version(if_match)
    body = await read_json(request, ContactPatch)

    def write() -> JSONResponse:
        with unit_of_work(engine) as uow:
            contact = update_contact(
                uow.conn,
                team_id=caller.team_id,
                contact_id=contact_id,
                data=body,
                expected_version=expected,
                api_key_id=caller.key_id,
            )
            uow.commit()
        return _contact_response(contact)

    return await run_in_threadpool(write)


@router.delete(
    "/contacts/{contact_id}",
    status_code=204,
    responses=_errors(404),
    summary="Delete a contact",
    description="Deletes and erases the contact: its history, and the team's dead letters "
    "that name it (by id, phone or email), which become tombstones that cannot be replayed. "
    "A do-not-call contact's numbers stay on the team's suppression list (as keyed hashes): "
    "a contact created later with one of them is do-not-call from the start.",
)
def delete(contact_id: ContactIdPath, caller: CallerDep, engine: EngineDep) -> Response:
    with unit_of_work(engine) as uow:
        delete_contact(
            uow.conn, team_id=caller.team_id, contact_id=contact_id, api_key_id=caller.key_id
        )
        uow.commit()
    return Response(status_code=204)


@router.get(
    "/contacts/{contact_id}/eligibility",
    response_model=EligibilityOut,
    responses=_errors(404, 422),
    openapi_extra={"parameters": query_parameters(EligibilityQuery)},
    summary="Whether the contact may be called at `at`, why not, and from when",
    description="Applies the team's calling policy and the rules that always hold "
    "(the 08:00-21:00 local floor, the shipped jurisdiction rules, the number's own zone): "
    "docs/design.md §12. `at` defaults to the current time.",
)
def eligibility(
    contact_id: ContactIdPath, request: Request, caller: CallerDep, engine: EngineDep
) -> dict[str, Any]:
    query = EligibilityQuery.parse(read_query(request, EligibilityQuery))
    at = query.at or utcnow()
    with unit_of_work(engine) as uow:
        answer = contact_eligibility(uow.conn, team_id=caller.team_id, contact_id=contact_id, at=at)
    return answer.to_dict()


@router.get(
    "/contacts/{contact_id}/history",
    response_model=HistoryList,
    responses=_errors(404, 422),
    openapi_extra={"parameters": query_parameters(HistoryQuery)},
    summary="A page of a contact's change history, newest first",
)
def history(
    contact_id: ContactIdPath, request: Request, caller: CallerDep, engine: EngineDep
) -> dict[str, Any]:
    query = HistoryQuery.parse(read_query(request, HistoryQuery))
    with unit_of_work(engine) as uow:
        records = list_history(
            uow.conn,
            team_id=caller.team_id,
            contact_id=contact_id,
            limit=query.limit,
            offset=query.offset,
        )
        if query.offset == 0 and len(records) < query.limit:
            total = len(records)  # the page holds every record: no count needed
        else:
            total = count_history(uow.conn, team_id=caller.team_id, contact_id=contact_id)
        provenance = contact_provenance(uow.conn, team_id=caller.team_id, contact_id=contact_id)
    return {
        "data": records,
        "total": total,
        "limit": query.limit,
        "offset": query.offset,
        "provenance": provenance,
    }


@router.get(
    "/contacts/{contact_id}/calls",
    response_model=CallList,
    responses=_errors(404, 422),
    openapi_extra={"parameters": query_parameters(HistoryQuery)},
    summary="A page of a contact's calls, newest first",
    description="The calls ledger (one row per call: a re-analysis of a call replaces its "
    "row, never adds one), newest `ended_at` first. Another team's contact is 404.",
)
def contact_calls(
    contact_id: ContactIdPath, request: Request, caller: CallerDep, engine: EngineDep
) -> dict[str, Any]:
    query = HistoryQuery.parse(read_query(request, HistoryQuery))
    with unit_of_work(engine) as uow:
        get_contact(uow.conn, team_id=caller.team_id, contact_id=contact_id)  # 404 if not ours
        where = {"team_id": caller.team_id, "contact_id": contact_id}
        rows = list_calls(uow.conn, **where, limit=query.limit, offset=query.offset)
        if query.offset == 0 and len(rows) < query.limit:
            total = len(rows)  # the page holds every call: no count needed
        else:
            total = count_calls(uow.conn, **where)
    return {"data": rows, "total": total, "limit": query.limit, "offset": query.offset}


def _company_body(body: Any, model: type[BaseModel]) -> dict[str, Any]:
    """``body`` if it is an object of ``model``'s fields only (either spelling), else 422.

    Unknown fields used to be ignored: ``{"name": "Zed", "bogus": 1}`` was a 201.
    """
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    known = {n for name, info in model.model_fields.items() for n in (name, info.alias) if n}
    unknown = {to_snake(key): "Unknown field" for key in body if key not in known}
    if unknown:
        raise ValidationFailed(unknown)
    return body


@router.post(
    "/companies",
    status_code=201,
    response_model=CompanyOut,
    responses=_errors(403, 413, 422) | {201: {"links": _COMPANY_LINKS}},
    openapi_extra=json_body(CompanyIn),
    summary="Create a company",
)
async def create_company_(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    body = _company_body(await read_json(request, CompanyIn), CompanyIn)
    team_id = _body_team(caller, body)

    def write() -> dict[str, Any]:
        with unit_of_work(engine) as uow:
            company = create_company(uow.conn, team_id=team_id, name=body.get("name"))
            uow.commit()
        return company.__dict__

    return await run_in_threadpool(write)


@router.get(
    "/companies",
    response_model=CompanyList,
    responses=_errors(403, 422),
    openapi_extra={"parameters": query_parameters(CompanyQuery)},
    summary="A page of a team's companies by name",
)
def companies(request: Request, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    values = read_query(request, CompanyQuery)
    values["team_id"] = caller.team(values.get("team_id"))
    query = CompanyQuery.parse(values)
    with unit_of_work(engine) as uow:
        page = find_companies(
            uow.conn,
            team_id=query.team_id,
            search=query.search,
            limit=query.limit,
            offset=query.offset,
        )
    return {
        "data": [company.__dict__ for company in page.data],
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
    }


@router.get(
    "/companies/{company_id}",
    response_model=CompanyOut,
    responses=_errors(404),
    summary="Get a company",
)
def get_company_(company_id: CompanyIdPath, caller: CallerDep, engine: EngineDep) -> dict[str, Any]:
    with unit_of_work(engine) as uow:
        return get_company(uow.conn, team_id=caller.team_id, company_id=company_id).__dict__


@router.patch(
    "/companies/{company_id}",
    response_model=CompanyOut,
    responses=_errors(404, 413, 422),
    openapi_extra=json_body(CompanyPatch),
    summary="Rename a company",
)
async def patch_company(
    company_id: CompanyIdPath, request: Request, caller: CallerDep, engine: EngineDep
) -> dict[str, Any]:
    body = _company_body(await read_json(request, CompanyPatch), CompanyPatch)

    def write() -> dict[str, Any]:
        with unit_of_work(engine) as uow:
            company = rename_company(
                uow.conn, team_id=caller.team_id, company_id=company_id, name=body.get("name")
            )
            uow.commit()
        return company.__dict__

    return await run_in_threadpool(write)


@router.delete(
    "/companies/{company_id}",
    status_code=204,
    responses=_errors(404, 409),
    summary="Delete a company that no contact belongs to",
    description="Refused with 409 while any contact belongs to the company: move or delete "
    "those contacts first (a delete never detaches them silently).",
)
def delete_company_(company_id: CompanyIdPath, caller: CallerDep, engine: EngineDep) -> Response:
    try:
        with unit_of_work(engine) as uow:
            delete_company(uow.conn, team_id=caller.team_id, company_id=company_id)
            uow.commit()
    except CompanyInUse as exc:
        return error(409, str(exc))
    return Response(status_code=204)
