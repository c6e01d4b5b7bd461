"""The JSON Schema (draft 2020-12) of ``call.completed`` v1, written from the worker's limits.

Publishers in other languages validate against ``schemas/call_completed.v1.json``
before sending; an event it passes should be one the worker's ``parse_event``
accepts, and the other way round. Pydantic's own schema could not be shipped:
it carries keywords JSON Schema validators ignore (``ge``/``le``, ``maxLength``
on an object) and none of the checks made in code (contact_id or phone, custom
field keys, nesting depth). So the schema is written here from the same
constants the model uses, and ``tests/test_event_schema.py`` compares the two
verdicts on generated events.

``python -m contact_sync.calls.event_schema`` rewrites the shipped file; ``--check``
exits 1 when it is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contact_sync.calls.events import (
    DIRECTIONS,
    FUTURE_TOLERANCE,
    MAX_CONTACT_FIELD_NAME_LENGTH,
    MAX_DURATION_SECONDS,
    MAX_EXTRACTOR_VERSION_LENGTH,
    MAX_ID_LENGTH,
    MAX_LEAD_STATUS_LENGTH,
    MAX_PHONE_LENGTH,
    MAX_SUMMARY_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TEXT_LENGTH,
    OUTCOMES,
    SCHEMA_VERSION,
    ExtractedContact,
)
from contact_sync.contacts.model import (
    MAX_CUSTOM_FIELDS,
    MAX_CUSTOM_FIELDS_BYTES,
    MAX_JSON_DEPTH,
    MAX_TAGS,
)
from contact_sync.storable import MAX_INTEGER, MIN_INTEGER

SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "call_completed.v1.json"

# No database stores U+0000, so the worker refuses it in any string or key.
NO_NUL = "^[^\\u0000]*$"
# The worker's custom-field key check (contacts.check_custom_key), character for character.
CUSTOM_KEY = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
# RFC 3339 with an upper-case T and an offset (Z or ±hh:mm), ranges included, so that a
# validator treating ``format`` as an annotation (the 2020-12 default) still checks it.
# It ends in ``(?![\s\S])``, not ``$``: Python's ``$`` also matches before a final
# newline, which the worker refuses.
DATE_TIME = (
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?"
    "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])(?![\\s\\S])"
)

DESCRIPTION = (
    "One finished call and what was extracted from it, as the contact_sync worker accepts it "
    "(docs/celery-message.md). An event valid here passes the worker's validation unless it "
    "breaks one of the rules JSON Schema cannot express, which the worker still checks: "
    "(1) occurred_at may be at most "
    f"{int(FUTURE_TOLERANCE.total_seconds() // 60)} minutes ahead of the worker's clock "
    "(else occurred_in_future); "
    f"(2) custom_fields may take at most {MAX_CUSTOM_FIELDS_BYTES // 1024} KiB as compact, "
    "ASCII-escaped JSON of its keys and plain values, and so may the unknown fields of "
    "extraction.contact; "
    "(3) text must be valid Unicode: a lone surrogate escape such as \\ud800 is refused; "
    "(4) schema_version and duration_seconds must be written as integers: JSON Schema counts "
    "1.0 as the integer 1, the worker does not; "
    f"(5) integers in values lie within 64 bits ({MIN_INTEGER}..{MAX_INTEGER}): a whole number "
    "beyond them written with an exponent or a fraction (1e20) is a float to the worker and "
    "accepted, while JSON Schema sees an out-of-range integer; validators that hold numbers as "
    "doubles check these bounds only approximately; "
    "(6) started_at, when given, must not be after occurred_at. "
    "Checked later, when the event is applied (a failure is dead-lettered, not refused at "
    "parse): that phone is a valid number, in E.164 or a national format of the team's region "
    "(phonenumbers), and that the team and contact_id exist. Checked when merged (a bad value "
    "is skipped and named in the history record, the event still applies): IANA time zone "
    "names, email syntax, lead statuses and the other contact fields. The worker also reads "
    "some ISO 8601 date-times that RFC 3339 excludes (a space or lower-case t, no seconds, "
    "+0200): publishers should send what this schema asks for."
)


def _text(max_length: int | None = None, *, min_length: int = 0, null: bool = False) -> Any:
    """A string without NUL (or null), of bounded length."""
    schema: dict[str, Any] = {"type": ["string", "null"] if null else "string"}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    schema["pattern"] = NO_NUL
    return schema


def _json_levels() -> dict[str, Any]:
    """Any JSON value nested at most ``MAX_JSON_DEPTH`` levels: one definition per level.

    JSON Schema has no depth keyword, so level n allows arrays and objects of level n-1
    values. String, number and container keywords apply only to their own type, so one
    schema per level covers every type.
    """
    scalar = {
        "type": ["null", "boolean", "number", "string"],
        "minimum": MIN_INTEGER,
        "maximum": MAX_INTEGER,
        "pattern": NO_NUL,
    }
    levels: dict[str, Any] = {"json_depth_0": scalar}
    for depth in range(1, MAX_JSON_DEPTH + 1):
        inner = {"$ref": f"#/$defs/json_depth_{depth - 1}"}
        levels[f"json_depth_{depth}"] = {
            **scalar,
            "type": ["null", "boolean", "number", "string", "array", "object"],
            "items": inner,
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": inner,
        }
    levels[f"json_depth_{MAX_JSON_DEPTH}"]["description"] = (
        f"Any JSON value nested at most {MAX_JSON_DEPTH} levels, its integers within 64 bits, "
        "its text without NUL."
    )
    return levels


def _json_value() -> dict[str, Any]:
    """Any JSON value, as deep as the worker allows."""
    return {"$ref": f"#/$defs/json_depth_{MAX_JSON_DEPTH}"}


def _extracted_value() -> dict[str, Any]:
    return {
        "description": "A custom-field value with the extractor's confidence and quote.",
        "type": "object",
        "required": ["value"],
        "properties": {
            "value": _json_value(),
            "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "evidence": _text(MAX_TEXT_LENGTH, null=True),
        },
        "additionalProperties": False,
    }


def _custom_field() -> dict[str, Any]:
    return {
        "description": (
            "An object of value and, optionally, confidence and evidence is an extracted value "
            "and checked as one; anything else is the plain value itself."
        ),
        "if": {
            "type": "object",
            "required": ["value"],
            "propertyNames": {"enum": ["value", "confidence", "evidence"]},
        },
        "then": {"$ref": "#/$defs/extracted_value"},
        "else": _json_value(),
    }


def _extracted_contact() -> dict[str, Any]:
    return {
        "description": (
            "Standard fields the extractor heard, each validated like API input when merged; "
            "unknown fields are allowed (the merge skips them and names them in the history)."
        ),
        "type": "object",
        "properties": {
            name: _text(MAX_TEXT_LENGTH, null=True)
            for name in sorted(ExtractedContact.model_fields)
        },
        "propertyNames": {"maxLength": MAX_CONTACT_FIELD_NAME_LENGTH, "pattern": NO_NUL},
        "additionalProperties": _json_value(),
    }


def _extraction() -> dict[str, Any]:
    return {
        "description": "What the AI extracted from the conversation.",
        "type": "object",
        "properties": {
            "extractor_version": _text(MAX_EXTRACTOR_VERSION_LENGTH, null=True),
            "custom_fields": {
                "description": (
                    f"Keys are slugs of at most 64 characters; at most {MAX_CUSTOM_FIELDS} of them."
                ),
                "type": "object",
                "maxProperties": MAX_CUSTOM_FIELDS,
                "propertyNames": {"pattern": CUSTOM_KEY},
                "additionalProperties": {"$ref": "#/$defs/custom_field"},
            },
            "contact": {"anyOf": [{"$ref": "#/$defs/extracted_contact"}, {"type": "null"}]},
            "lead_status": _text(MAX_LEAD_STATUS_LENGTH, null=True),
            "do_not_call": {"type": ["boolean", "null"]},
            "tags": {
                "type": ["array", "null"],
                "maxItems": MAX_TAGS,
                "items": _text(MAX_TAG_LENGTH),
            },
            "summary": _text(MAX_SUMMARY_LENGTH, null=True),
        },
        "additionalProperties": False,
    }


def _event_properties() -> dict[str, Any]:
    """The top-level fields of the event, in the order the contract lists them."""
    return {
        "event_id": {
            **_text(MAX_ID_LENGTH, min_length=1),
            "description": "Unique within the team: a repeat is acknowledged as a duplicate.",
        },
        "type": {"enum": ["call.completed"]},
        "schema_version": {"type": "integer", "const": SCHEMA_VERSION},
        "team_id": _text(MAX_ID_LENGTH, min_length=1),
        "call_id": _text(MAX_ID_LENGTH, min_length=1),
        "contact_id": _text(MAX_ID_LENGTH, min_length=1, null=True),
        "phone": {
            **_text(MAX_PHONE_LENGTH, null=True),
            "description": "E.164, or a national number of the team's region.",
        },
        "campaign_id": _text(MAX_ID_LENGTH, min_length=1, null=True),
        "occurred_at": {
            "description": "When the call ended: RFC 3339 with an offset.",
            "type": "string",
            "format": "date-time",
            "pattern": DATE_TIME,
        },
        "outcome": {"enum": list(OUTCOMES)},
        "duration_seconds": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": MAX_DURATION_SECONDS,
        },
        "extraction": {"anyOf": [{"$ref": "#/$defs/extraction"}, {"type": "null"}]},
        "direction": {
            "description": "Who placed the call: outbound (the dialer) or inbound (the person). "
            "Absent or null: round 1's behaviour (an unknown number creates a contact); the "
            "calls ledger records outbound.",
            "enum": [*DIRECTIONS, None],
        },
        "started_at": {
            "description": "When the call started: RFC 3339 with an offset, not after "
            "occurred_at. Absent: the ledger takes occurred_at minus duration_seconds.",
            "type": ["string", "null"],
            "format": "date-time",
            "pattern": DATE_TIME,
        },
    }


def build_schema() -> dict[str, Any]:
    """The schema as a JSON object."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://contact-sync.dev/schemas/call.completed.v1.json",
        "title": "call.completed (schema_version 1)",
        "description": DESCRIPTION,
        "type": "object",
        "required": [
            "event_id",
            "type",
            "schema_version",
            "team_id",
            "call_id",
            "occurred_at",
            "outcome",
        ],
        "properties": _event_properties(),
        "additionalProperties": False,
        "anyOf": [
            {"required": ["contact_id"], "properties": {"contact_id": {"type": "string"}}},
            {"required": ["phone"], "properties": {"phone": {"type": "string"}}},
        ],
        "$comment": "contact_id or phone: at least one of them, not null.",
        "$defs": {
            "extraction": _extraction(),
            "extracted_contact": _extracted_contact(),
            "custom_field": _custom_field(),
            "extracted_value": _extracted_value(),
            **_json_levels(),
        },
    }


def render() -> str:
    """The file's text: sorted keys would scatter the schema, so it keeps its written order."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the shipped schema, or with ``--check`` say whether it is current."""
    parser = argparse.ArgumentParser(prog="python -m contact_sync.calls.event_schema")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if SCHEMA_PATH.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_PATH} is out of date: run python -m contact_sync.calls.event_schema")
            return 1
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
