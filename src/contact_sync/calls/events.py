"""The ``call.completed`` event, schema version 1 (the contract with the call pipeline).

Parsing sorts failures into the dead-letter reasons (docs/design.md §2), so the
worker can park a bad event with a code a person can act on.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contact_sync.contacts.model import (
    MAX_CUSTOM_FIELDS,
    MAX_CUSTOM_FIELDS_BYTES,
    MAX_TAGS,
    check_custom_fields_size,
    check_custom_key,
    check_custom_value,
)
from contact_sync.storable import has_unstorable, is_storable_text

SCHEMA_VERSION = 1
FUTURE_TOLERANCE = timedelta(minutes=10)
MAX_BATCH = 500
# The limits of the fields, also written into the JSON Schema (event_schema.py).
MAX_ID_LENGTH = 200
MAX_TEXT_LENGTH = 2000
MAX_PHONE_LENGTH = 40
MAX_DURATION_SECONDS = 86_400 * 7
MAX_EXTRACTOR_VERSION_LENGTH = 100
MAX_LEAD_STATUS_LENGTH = 64
MAX_TAG_LENGTH = 64
MAX_SUMMARY_LENGTH = 10_000
MAX_CONTACT_FIELD_NAME_LENGTH = 64

CallOutcome = Literal["completed", "voicemail", "no_answer", "busy", "failed"]
OUTCOMES: tuple[str, ...] = get_args(CallOutcome)
# Who placed the call (docs/design.md §11); an event without one is read as round 1 read it.
CallDirection = Literal["outbound", "inbound"]
DIRECTIONS: tuple[str, ...] = get_args(CallDirection)

# Why an event was dead-lettered: the one list of codes (the worker, the API's
# and the CLI's ``reason`` filters and the docs all read it from here).
Reason = Literal[
    "invalid_payload",
    "unsupported_schema_version",
    "occurred_in_future",
    "contact_not_found",
    "ambiguous_contact",
    "poison_message",
]
REASONS: tuple[str, ...] = get_args(Reason)

# What became of one delivered event (worker logs and metrics, replays, the inbox).
EventOutcome = Literal["applied", "no_change", "duplicate", "dead_lettered"]
EVENT_OUTCOMES: tuple[str, ...] = get_args(EventOutcome)


class InvalidEvent(Exception):
    """The payload can never be applied as it is; ``reason`` is the dead-letter code."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


_ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")


def _exact_integer(value: Any) -> Any:
    # JSON `true` and `1.0` are not the version 1: a publisher sending them has a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _iso_date_time(value: Any) -> Any:
    # Pydantic would also read Unix timestamps (seconds or milliseconds, guessed
    # from the size); the contract is ISO 8601 text, so a number is refused.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE_TIME.match(value):
        raise ValueError("must be an ISO 8601 date-time with an offset")
    return value


Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_date_time)]
ShortText = Annotated[StrictStr, Field(max_length=MAX_TEXT_LENGTH)]


class ExtractedValue(BaseModel):
    """A custom-field value with the extractor's confidence and quote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: JsonValue
    confidence: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] | None = None
    evidence: ShortText | None = None


_WRAPPED = frozenset({"value", "confidence", "evidence"})
_PLAIN = (bool, type(None))  # values with nothing to check (text: with the whole payload)


@lru_cache(maxsize=4096)
def _key_error(key: str) -> str | None:
    """Why ``key`` is not a custom field's key, or None. Cached: an extractor's keys recur."""
    try:
        check_custom_key(key)
    except ValueError as exc:
        return str(exc)
    return None


def _wrap_custom_fields(value: Any) -> Any:
    """Plain values become ``{value}``; ``{value, confidence?, evidence?}`` stays.

    Every value is checked as the contact's custom fields are (``check_custom_value``;
    text was checked with the whole payload), and the map's size as a contact's
    (``check_custom_fields_size``), by its bound while every value is a scalar.
    """
    if not isinstance(value, dict):
        return value
    wrapped: dict[str, Any] = {}
    bound = 2  # contacts.model._scalar_size_bound, summed as the values go by
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError("custom field keys must be strings")
        error = _key_error(key)
        if error is not None:
            raise ValueError(error)
        is_wrapped = isinstance(item, dict) and "value" in item and item.keys() <= _WRAPPED
        candidate = item["value"] if is_wrapped else item
        kind = type(candidate)
        if kind is str:
            bound += 12 * (len(key) + len(candidate)) + 6
        elif kind in _PLAIN:
            bound += 12 * len(key) + 36
        else:
            try:
                check_custom_value(candidate, text_checked=True)
            except ValueError as exc:
                raise ValueError(f"custom field {key}: {exc}") from None
            scalar = kind is int or kind is float
            bound += 12 * len(key) + 36 if scalar else MAX_CUSTOM_FIELDS_BYTES + 1
        wrapped[key] = item if is_wrapped else {"value": item}
    if len(wrapped) > MAX_CUSTOM_FIELDS or bound > MAX_CUSTOM_FIELDS_BYTES:
        # The values land in the contact's custom fields: the contact's limits hold for them.
        try:
            check_custom_fields_size({key: item["value"] for key, item in wrapped.items()})
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    return wrapped


class ExtractedContact(BaseModel):
    """Standard fields the extractor heard; each is validated like API input in the merge."""

    model_config = ConfigDict(extra="allow", frozen=True)

    email: ShortText | None = None
    job_title: ShortText | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    phone_secondary: ShortText | None = None
    timezone: ShortText | None = None
    preferred_contact_method: ShortText | None = None

    @model_validator(mode="after")
    def _storable_unknown_fields(self) -> ExtractedContact:
        # An unknown field does not fail the event: the merge names it in the
        # history record's `skipped`, so it must be JSON a database can store.
        for name, value in (self.model_extra or {}).items():
            if len(name) > MAX_CONTACT_FIELD_NAME_LENGTH:
                raise ValueError(f"contact field name {name[:70]!r} is longer than 64 characters")
            try:
                check_custom_value(value)
            except ValueError as exc:
                raise ValueError(f"contact field {name}: {exc}") from None
        if self.model_extra and len(json.dumps(self.model_extra)) > MAX_CUSTOM_FIELDS_BYTES:
            raise ValueError("unknown contact fields must be at most 64 KiB in all")
        return self


class Extraction(BaseModel):
    """What the AI extracted from the conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extractor_version: (
        Annotated[StrictStr, Field(max_length=MAX_EXTRACTOR_VERSION_LENGTH)] | None
    ) = None
    custom_fields: Annotated[
        dict[str, ExtractedValue],
        BeforeValidator(_wrap_custom_fields),
        Field(max_length=MAX_CUSTOM_FIELDS),
    ] = Field(default_factory=dict)
    contact: ExtractedContact | None = None
    lead_status: Annotated[StrictStr, Field(max_length=MAX_LEAD_STATUS_LENGTH)] | None = None
    do_not_call: StrictBool | None = None
    tags: (
        Annotated[
            list[Annotated[StrictStr, Field(max_length=MAX_TAG_LENGTH)]], Field(max_length=MAX_TAGS)
        ]
        | None
    ) = None
    summary: Annotated[StrictStr, Field(max_length=MAX_SUMMARY_LENGTH)] | None = None


class CallCompleted(BaseModel):
    """One finished call and what was extracted from it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"$id": "https://contact-sync.dev/schemas/call.completed.v1.json"},
    )

    event_id: Id
    type: Literal["call.completed"]
    schema_version: Annotated[Literal[1], BeforeValidator(_exact_integer)]
    team_id: Id
    call_id: Id
    contact_id: Id | None = None
    phone: Annotated[StrictStr, Field(max_length=MAX_PHONE_LENGTH)] | None = None
    campaign_id: Id | None = None
    occurred_at: Instant
    outcome: CallOutcome
    duration_seconds: Annotated[StrictInt, Field(ge=0, le=MAX_DURATION_SECONDS)] | None = None
    extraction: Extraction | None = None
    # Optional since the calls ledger (docs/design.md §11): events without them stay valid.
    direction: CallDirection | None = None
    started_at: Instant | None = None

    @model_validator(mode="after")
    def _starts_before_it_ends(self) -> CallCompleted:
        if self.started_at is not None and self.started_at > self.occurred_at:
            # Not a ValueError: pydantic would prefix "Value error, " to the dead letter's text.
            raise PydanticCustomError("invalid", "started_at must not be after occurred_at")
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_event(payload: Any, *, now: datetime) -> CallCompleted:
    """Validate a payload as received, or raise ``InvalidEvent`` with its reason."""
    if not isinstance(payload, dict):
        raise InvalidEvent("invalid_payload", "the event must be a JSON object")
    if has_unstorable(payload):
        # No database can hold these: say so here rather than fail on write.
        raise InvalidEvent(
            "invalid_payload", "the event contains a NUL character or invalid Unicode text"
        )
    version = payload.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        raise InvalidEvent(
            "unsupported_schema_version",
            f"schema_version {version} is not supported (this worker reads {SCHEMA_VERSION})",
        )
    try:
        event = CallCompleted.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent("invalid_payload", _describe(exc)) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidEvent("invalid_payload", f"unreadable event: {exc}") from None
    if event.contact_id is None and event.phone is None:
        raise InvalidEvent("invalid_payload", "contact_id or phone is required")
    if event.occurred_at > now + FUTURE_TOLERANCE:
        raise InvalidEvent(
            "occurred_in_future",
            f"occurred_at {event.occurred_at.isoformat()} is more than 10 minutes ahead",
        )
    return event


def _storable_id(payload: Any, key: str, max_length: int) -> str | None:
    # An id that a database column cannot hold is treated as absent, so the
    # payload can still be parked.
    value = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        return None
    return value if is_storable_text(value) else None


def event_id_of(payload: Any) -> str | None:
    """The event id of a payload that may not validate, for dead letters and the inbox."""
    return _storable_id(payload, "event_id", MAX_ID_LENGTH)


def call_id_of(payload: Any) -> str | None:
    """The call id of a payload that may not validate, for log lines."""
    return _storable_id(payload, "call_id", MAX_ID_LENGTH)


def team_id_of(payload: Any) -> str | None:
    """The team id of a payload that may not validate."""
    return _storable_id(payload, "team_id", 36)


def json_schema() -> dict[str, Any]:
    """The JSON Schema shipped for publishers in other languages (``event_schema.py``)."""
    from contact_sync.calls.event_schema import build_schema

    return build_schema()
