"""Query strings and JSON bodies read with the service's own validation.

FastAPI's built-in parsing would answer in its own words and could not
accept both camelCase and snake_case names, so routes read the raw values
here and the OpenAPI document is filled from the same models.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from pydantic.alias_generators import to_camel, to_snake

from contact_sync.errors import ValidationFailed


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


def read_query(request: Request, model: type[BaseModel], **fixed: Any) -> dict[str, Any]:
    """Known parameters (either spelling) as snake_case keys; unknown ones are ignored."""
    properties = _properties(model)
    values: dict[str, Any] = {}
    for name in model.model_fields:
        for spelling in (to_camel(name), name):
            if spelling in request.query_params:
                values[name] = _from_text(request.query_params[spelling], properties.get(name, {}))
                break
    values.update(fixed)
    return values


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
        params.append({"name": to_camel(name), "in": "query", "required": False, "schema": schema})
    return params


def _bad_text(value: Any) -> str | None:
    """Why some string in ``value`` (a key or a value) cannot be stored, if one cannot.

    JSON's ``\\ud800`` escapes decode to text that is not Unicode, which no
    database stores and no response encodes; PostgreSQL text and JSONB cannot
    hold U+0000. Iterative: a body may nest nearly as deep as the parser allows.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "Must not contain NUL characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "Must be valid Unicode text"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


async def read_json(request: Request) -> Any:
    """The body as JSON, or a 422 naming ``body`` (or the field holding bad text)."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed({"body": "Body must be valid JSON"}) from None
    if isinstance(body, dict):
        for key, value in body.items():
            problem = _bad_text(value)
            if problem and not _bad_text(key):
                raise ValidationFailed({to_snake(key): problem})
    problem = _bad_text(body)
    if problem:
        raise ValidationFailed({"body": problem})
    return body


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (camelCase names)."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
