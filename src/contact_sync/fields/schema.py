"""The extraction schema: a team's ``aiExtractable`` fields as JSON Schema (draft 2020-12).

A call pipeline hands it to its extractor (a Vapi structured output, an
OpenAI/Anthropic tool's ``input_schema``) so that what comes back in
``extraction.custom_fields`` already has the fields' types; the worker
coerces it anyway (docs/design.md §13). Each field may be ``null``: not
found in this call, which changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from contact_sync.fields.definitions import FieldDefinition
from contact_sync.fields.patterns import MAX_TEXT_LENGTH

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _values(definition: FieldDefinition) -> list[str]:
    return [option.value for option in definition.options]


def _bounds(definition: FieldDefinition) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if definition.minimum is not None:
        bounds["minimum"] = definition.minimum
    if definition.maximum is not None:
        bounds["maximum"] = definition.maximum
    return bounds


def _typed(definition: FieldDefinition) -> dict[str, Any]:
    """The schema of one field's canonical value."""
    kind = definition.type
    if kind == "text":
        text: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH}
        return text | ({"pattern": definition.pattern} if definition.pattern else {})
    if kind in ("number", "integer"):
        return {"type": kind} | _bounds(definition)
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "select":
        return {"type": "string", "enum": _values(definition)}
    if kind == "multi_select":
        items = {"type": "string", "enum": _values(definition)}
        return {"type": "array", "items": items, "uniqueItems": True}
    formats = {"date": "date", "datetime": "date-time", "email": "email", "url": "uri"}
    if kind in formats:
        return {"type": "string", "format": formats[kind]}
    return {"type": "string", "minLength": 1, "maxLength": 40}  # a phone: E.164 at best


def _describe(definition: FieldDefinition) -> str:
    words = [definition.label]
    if definition.description:
        words.append(definition.description)
    if definition.type == "select":
        words += [f"{o.value}: {o.label}" for o in definition.options if o.label != o.value]
    return ". ".join(words)


def extraction_schema(definitions: Iterable[FieldDefinition]) -> dict[str, Any]:
    """The ``custom_fields`` object an extractor should fill, for the ``aiExtractable`` fields."""
    properties: dict[str, Any] = {}
    for definition in definitions:
        if not definition.ai_extractable:
            continue
        typed = _typed(definition)
        properties[definition.key] = {
            "description": _describe(definition),
            "anyOf": [{k: v for k, v in typed.items() if k != "description"}, {"type": "null"}],
        }
    return {
        "$schema": DIALECT,
        "title": "custom_fields",
        "description": "Values found in the call, by custom field; null when not found.",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
