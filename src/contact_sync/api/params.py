"""Query strings and JSON bodies read with the service's own validation.

FastAPI's built-in parsing would answer in its own words and could not
accept both camelCase and snake_case names, so routes read the raw values
here and the OpenAPI document is filled from the same models.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from pydantic.alias_generators import to_camel, to_snake
from starlette.concurrency import run_in_threadpool

from contact_sync.api.errors import MAX_DETAILS
from contact_sync.errors import ValidationFailed
from contact_sync.storable import unstorable_text

# The wire forms of the OpenAPI document's query types, and nothing more: pydantic's
# lax parsing would also take "1.0", "+1", " 1" and "1_0" as integers, and Unix
# timestamps as date-times. ASCII digits only (str.isdigit and int() take "١").
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII | re.IGNORECASE,
)


def _from_text(value: str, schema: dict[str, Any]) -> Any:
    kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    if "boolean" in kinds:
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return value


@cache
def _properties(model: type[BaseModel]) -> dict[str, Any]:
    # By field name: the parameters are looked up by snake_case name. Cached:
    # building a JSON Schema costs more than the rest of reading a query.
    properties: dict[str, Any] = model.model_json_schema(by_alias=False)["properties"]
    return properties


def _matches(pattern: str, value: str) -> bool:
    """ECMA-262 semantics of a JSON Schema ``pattern`` (ours are anchored ASCII classes).

    Python's ``$`` also matches before a final newline; JavaScript's does not.
    """
    found = re.search(pattern, value, re.ASCII)
    return found is not None and (not pattern.endswith("$") or found.end() == len(value))


def _off_the_wire(value: str, schema: dict[str, Any], message: str | None) -> str | None:
    """Why ``value`` is not of the form ``schema`` documents, if it is not."""
    if schema.get("type") == "integer" and not _INTEGER.fullmatch(value):
        return "Must be a whole number such as 50"
    if schema.get("format") == "date-time" and not _DATE_TIME.fullmatch(value):
        return "Must be a date and time with a UTC offset, such as 2026-11-20T15:00:00Z"
    pattern = schema.get("pattern")
    if pattern is not None and not _matches(pattern, value):
        return message or f"Must match the pattern {pattern}"
    return None


def read_query(
    request: Request,
    model: type[BaseModel],
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
    messages: dict[str, str] | None = None,
    prefixes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Known parameters (either spelling) as snake_case keys; anything else is a 422.

    A parameter the route does not know, or a single-valued one given twice (in
    one spelling or both), is refused by name: ignored, ``?tag=vip`` listed every
    contact. Array fields are repeatable and read as lists. Each value must have
    the form the OpenAPI document gives it (``overrides`` as passed to
    ``query_parameters``); ``messages`` words a pattern mismatch per field.
    Parameters starting with one of ``prefixes`` (the ``cf.`` filters) are
    returned as they came, each name with the list of its values, for the
    model's own ``parse`` to read.
    """
    reject_unknown_query(request, query_names(model), prefixes)
    properties = _properties(model)
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name in model.model_fields:
        schema = (overrides or {}).get(name) or _query_schema(properties.get(name, {}))
        given = [
            text
            for spelling in dict.fromkeys((to_camel(name), name))
            for text in request.query_params.getlist(spelling)
        ]
        if not given:
            continue
        if schema.get("type") == "array":
            items = schema.get("items", {})
            for text in given:
                problem = _off_the_wire(text, items, (messages or {}).get(name))
                if problem:
                    problems.setdefault(name, problem)
            values[name] = [_from_text(text, items) for text in given]
            continue
        if len(given) > 1:
            problems[name] = "Must be given once"
            continue
        problem = _off_the_wire(given[0], schema, (messages or {}).get(name))
        if problem:
            problems[name] = problem
        values[name] = _from_text(given[0], schema)
    if problems:
        raise ValidationFailed(problems)
    for name in dict.fromkeys(request.query_params):
        if prefixes and name.startswith(prefixes):
            values[name] = request.query_params.getlist(name)
    return values


@cache
def query_names(model: type[BaseModel]) -> frozenset[str]:
    """Both spellings of every parameter of a query model."""
    return frozenset(n for name in model.model_fields for n in (name, to_camel(name)))


def reject_unknown_query(
    request: Request, known: frozenset[str], prefixes: tuple[str, ...] = ()
) -> None:
    """``ValidationFailed`` naming (as sent) each query parameter not in ``known`` and not
    starting with one of ``prefixes``."""
    unknown = {
        name: "Unknown query parameter"
        for name in request.query_params
        if name not in known and not (prefixes and name.startswith(prefixes))
    }
    if unknown:
        raise ValidationFailed(unknown)


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # A query parameter is absent or a string, never JSON null: drop the
    # null branch pydantic adds for optional fields.
    branches = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k not in ("title", "anyOf")}
    if len(branches) == 1:
        return {**branches[0], **rest}
    return {**({"anyOf": branches} if branches else {}), **rest}


def query_parameters(
    model: type[BaseModel],
    *,
    skip: tuple[str, ...] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """OpenAPI parameter objects for a query model (camelCase names).

    ``overrides`` replaces the schema of a field whose wire format pydantic
    cannot tell (a time of day read as ``HH:MM``, a slug).
    """
    properties = model.model_json_schema(by_alias=False)["properties"]
    params = []
    for name, schema in properties.items():
        if name in skip:
            continue
        schema = (overrides or {}).get(name) or _query_schema(schema)
        param = {"name": to_camel(name), "in": "query", "required": False, "schema": schema}
        # At the parameter too: that is where Swagger UI and ReDoc show it.
        params.append(
            param | ({"description": schema["description"]} if "description" in schema else {})
        )
    return params


def _bad_text(value: Any) -> str | None:
    """Why some string in ``value`` (a key or a value) cannot be stored, if one cannot.

    JSON's ``\\ud800`` escapes decode to text that is not Unicode, which no
    database stores and no response encodes; PostgreSQL text and JSONB cannot
    hold U+0000.
    """
    text = unstorable_text(value)
    if text is None:
        return None
    return "Must not contain NUL characters" if "\x00" in text else "Must be valid Unicode text"


def _unknown_fields(body: Any, model: type[BaseModel]) -> dict[str, str]:
    """``{key: "Unknown field"}`` for each top-level key ``model`` does not name."""
    if not isinstance(body, dict):
        return {}
    known = _names(model)
    return {key: "Unknown field" for key in body if key not in known}


@cache
def _names(model: type[BaseModel]) -> frozenset[str]:
    fields = model.model_fields.items()
    return frozenset(name for field, info in fields for name in (field, info.alias) if name)


# The only ways a parsed JSON text can hold NUL or a lone surrogate: an escape of
# one, or (through json's "surrogatepass" decoding) bytes that are not UTF-8.
_RISKY_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _may_hold_bad_text(raw: bytes) -> bool:
    """False when no string parsed from ``raw`` can hold NUL or a lone surrogate.

    Exact, and a C-speed scan: the walk over every string of a large body is
    skipped for the bodies clients actually send.
    """
    if b"\x00" in raw or _RISKY_ESCAPE.search(raw):  # NUL bytes: UTF-16/32 text
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def parse_json(raw: bytes, model: type[BaseModel] | None = None) -> Any:
    """``raw`` as JSON, or ``ValidationFailed`` naming ``body`` (or the field holding bad text).

    With ``model``, a body with more unknown fields than a 422 lists is refused for those
    alone: validating it would make the model report every one of them (100,000 keys
    of a 1 MiB body cost a second of CPU in pydantic, holding the GIL throughout).
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed({"body": "Body must be valid JSON"}) from None
    if _may_hold_bad_text(raw):
        if isinstance(body, dict):
            for key, value in body.items():
                problem = _bad_text(value)
                if problem and not _bad_text(key):
                    raise ValidationFailed({to_snake(key): problem})
        problem = _bad_text(body)
        if problem:
            raise ValidationFailed({"body": problem})
    if model is not None:
        unknown = _unknown_fields(body, model)
        if len(unknown) > MAX_DETAILS:
            raise ValidationFailed(unknown)
    return body


async def read_json(request: Request, model: type[BaseModel] | None = None) -> Any:
    """The body, parsed by ``parse_json`` in a worker thread.

    Only the bytes are received on the event loop: parsing and walking a 1 MiB body
    there took ~100 ms during which no other request was answered.
    """
    raw = await request.body()
    return await run_in_threadpool(parse_json, raw, model)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (camelCase names)."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
