"""Query strings and JSON bodies read with the service's own validation.

FastAPI's built-in parsing would answer in its own words and could not
accept both camelCase and snake_case names, so routes read the raw values
here and the OpenAPI document is filled from the same models.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from contact_sync.errors import ValidationFailed


def _from_text(value: str, schema: dict[str, Any]) -> Any:
    kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    if "boolean" in kinds:
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return value


def read_query(request: Request, model: type[BaseModel], **fixed: Any) -> dict[str, Any]:
    """Known parameters (either spelling) as snake_case keys; unknown ones are ignored."""
    properties = model.model_json_schema()["properties"]
    values: dict[str, Any] = {}
    for name in model.model_fields:
        for spelling in (to_camel(name), name):
            if spelling in request.query_params:
                values[name] = _from_text(request.query_params[spelling], properties.get(name, {}))
                break
    values.update(fixed)
    return values


def query_parameters(model: type[BaseModel], *, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """OpenAPI parameter objects for a query model (camelCase names)."""
    properties = model.model_json_schema(by_alias=False)["properties"]
    params = []
    for name, schema in properties.items():
        if name in skip:
            continue
        schema = {k: v for k, v in schema.items() if k != "title"}
        params.append({"name": to_camel(name), "in": "query", "required": False, "schema": schema})
    return params


async def read_json(request: Request) -> Any:
    """The body as JSON, or a 422 naming ``body``."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed({"body": "Body must be valid JSON"}) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (camelCase names)."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
