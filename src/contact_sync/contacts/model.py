"""The contact model and the validation of its input (create and patch).

Pure: no database. The same validators serve the API, the CLI and the merge
of call events, so a value an AI extracted is held to the rules a person's
input is.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, TypeVar
from zoneinfo import available_timezones

from email_validator import EmailNotValidError
from email_validator import validate_email as _check_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from contact_sync.contacts import lead_status
from contact_sync.contacts.phones import normalise_phone
from contact_sync.errors import ValidationFailed
from contact_sync.storable import (
    MAX_INTEGER,
    MIN_INTEGER,
    has_unstorable,
    is_storable_number,
    is_storable_text,
    is_unicode,
)

# The OpenAPI document's lead status: a known one, or any other slug (people may set any).
LEAD_STATUS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"enum": list(lead_status.KNOWN), "description": "A known status."},
        {"type": "string", "description": "Any other status."},
    ]
}
MAX_CUSTOM_FIELDS = 200
MAX_CUSTOM_FIELDS_BYTES = 64 * 1024
MAX_JSON_DEPTH = 20
MAX_TAGS = 50

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_CUSTOM_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


def _fail(message: str) -> PydanticCustomError:
    # PydanticCustomError keeps our message verbatim (a ValueError would be
    # prefixed with "Value error, "), so the API can return it as-is.
    return PydanticCustomError("invalid", message)


def _text(max_len: int, *, required: bool = False) -> Any:
    def check(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _fail("Must be a string")
        if "\x00" in value:
            raise _fail("Must not contain NUL characters")
        if not is_unicode(value):
            raise _fail("Must be valid Unicode text")
        value = value.strip()
        if required and not value:
            raise _fail("Must not be empty")
        if len(value) > max_len:
            raise _fail(f"Must be at most {max_len} characters")
        return value if value or required else None

    return BeforeValidator(check)


def _phone(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return None
    region = (info.context or {}).get("region", "US")
    try:
        return normalise_phone(value, region)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def normalise_email(value: str) -> str:
    """Check an address; lower-case its domain and keep the local part as given."""
    try:
        checked = _check_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError("Email must be a valid address") from exc
    return f"{checked.local_part}@{checked.domain.lower()}"


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalise_email(value)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


@lru_cache(maxsize=1)
def iana_timezones() -> frozenset[str]:
    """The IANA zone names of this machine's tz database.

    Without ``localtime``: a link to the machine's own zone, not an IANA name,
    so a contact's call window would follow whichever server read it.
    """
    return frozenset(available_timezones() - {"localtime"})


def _timezone(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in iana_timezones():
        raise _fail("Timezone must be a valid IANA name such as America/Chicago")
    return value


def normalise_lead_status(value: str) -> str:
    """``Do Not Contact`` → ``do_not_contact``; raises ValueError when no slug remains."""
    slug = re.sub(r"[\s-]+", "_", value.strip().lower())
    if not slug or len(slug) > 64 or not _SLUG.match(slug):
        raise ValueError("Lead status must be a slug such as qualified")
    return slug


def _lead_status(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalise_lead_status(value)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _method(value: str | None) -> str | None:
    if value is None:
        return None
    slug = re.sub(r"[\s]+", "_", value.lower())
    if not _SLUG.match(slug) or len(slug) > 32:
        raise _fail("Preferred contact method must be a slug such as phone, email or sms")
    return slug


def _json_depth(value: Any, depth: int = 0) -> int:
    if depth > MAX_JSON_DEPTH:
        return depth
    if isinstance(value, dict):
        return max((_json_depth(v, depth + 1) for v in value.values()), default=depth + 1)
    if isinstance(value, list):
        return max((_json_depth(v, depth + 1) for v in value), default=depth + 1)
    return depth


def check_custom_value(value: Any, *, text_checked: bool = False) -> None:
    """Raise ValueError unless ``value`` is plain, finite JSON of bounded depth.

    ``text_checked``: the caller already checked every string in it (an
    event checks its whole payload once).
    """
    if value is None or isinstance(value, str | bool):  # most values: nothing to encode
        if isinstance(value, str) and not text_checked and not is_storable_text(value):
            raise ValueError(
                "Custom field values must be valid Unicode text without NUL characters"
            )
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Custom field values must be finite JSON values")
    if isinstance(value, float) or (isinstance(value, int) and is_storable_number(value)):
        return
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"Custom field values must nest at most {MAX_JSON_DEPTH} levels")
    if not text_checked and has_unstorable(value):
        raise ValueError("Custom field values must be valid Unicode text without NUL characters")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError("Custom field values must be finite JSON values") from exc
    if has_unstorable(value, numbers=True):  # text and floats passed: an integer is too large
        raise ValueError(f"Custom field integers must lie between {MIN_INTEGER} and {MAX_INTEGER}")


def check_custom_key(key: str) -> None:
    """Raise ValueError unless ``key`` is a slug of at most 64 characters."""
    if not _CUSTOM_KEY.match(key):
        raise ValueError(f"Custom field key {key[:70]!r} must be a slug of at most 64 characters")


def _scalar_size_bound(fields: dict[str, Any]) -> int:
    """An upper bound of the map's encoded size when every value is a scalar, else a huge one.

    A character encodes to at most 12 bytes (an escaped surrogate pair); a
    number or literal to at most 32.
    """
    bound = 2
    for key, item in fields.items():
        if isinstance(item, str):
            bound += 12 * (len(key) + len(item)) + 6
        elif item is None or isinstance(item, bool | int | float):
            bound += 12 * len(key) + 36
        else:
            return MAX_CUSTOM_FIELDS_BYTES + 1
    return bound


def check_custom_fields_size(fields: dict[str, Any]) -> None:
    """Raise ValueError when the whole map exceeds 200 keys or 64 KiB."""
    if len(fields) > MAX_CUSTOM_FIELDS:
        raise ValueError(f"At most {MAX_CUSTOM_FIELDS} custom fields")
    if _scalar_size_bound(fields) <= MAX_CUSTOM_FIELDS_BYTES:
        return  # cannot be over the limit: skip encoding it (the worker's hot path)
    if len(json.dumps(fields, separators=(",", ":")).encode()) > MAX_CUSTOM_FIELDS_BYTES:
        raise ValueError("Custom fields must be at most 64 KiB")


def _custom_fields(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("Custom fields must be an object")
    try:
        for key, item in value.items():
            check_custom_key(key)
            check_custom_value(item)
        check_custom_fields_size(value)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    return dict(value)


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _fail("Tags must be an array of strings")
    seen: dict[str, None] = {}
    for tag in value:
        if not isinstance(tag, str) or not tag.strip() or not is_storable_text(tag):
            raise _fail("Each tag must be a non-empty string")
        tag = tag.strip()
        if len(tag) > 64:
            raise _fail("Each tag must be at most 64 characters")
        seen.setdefault(tag, None)
    if len(seen) > MAX_TAGS:
        raise _fail(f"At most {MAX_TAGS} tags")
    return list(seen)


Name = Annotated[str, _text(100, required=True)]
OptionalText100 = Annotated[str | None, _text(100)]
Phone = Annotated[str | None, _text(40), AfterValidator(_phone)]
Email = Annotated[str | None, _text(320), AfterValidator(_email)]
TimeZoneName = Annotated[str | None, _text(64), AfterValidator(_timezone)]
LeadStatus = Annotated[str | None, _text(64), AfterValidator(_lead_status)]
ContactMethod = Annotated[str | None, _text(32), AfterValidator(_method)]
Notes = Annotated[str | None, _text(10_000)]
CustomFields = Annotated[dict[str, Any] | None, BeforeValidator(_custom_fields)]
Tags = Annotated[list[str] | None, BeforeValidator(_tags)]
Identifier = Annotated[str | None, _text(64)]


class _Input(BaseModel):
    """Accepts camelCase and snake_case names; unknown names are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class _ContactFields(_Input):
    """The optional fields that create and patch share."""

    company_id: Identifier = Field(
        default=None,
        description="A company of the same team; null for none.",
        examples=["0193a5c5-3b81-7e90-a4d2-6f1e8c3b5d27"],
    )
    email: Email = Field(
        default=None,
        description="A valid address; its domain is stored lower-cased.",
        examples=["ada@example.com"],
    )
    phone: Phone = Field(
        default=None,
        description="Any common form: national ones are read in the team's region; stored "
        "as E.164.",
        examples=["(202) 555-1234"],
    )
    phone_secondary: Phone = Field(
        default=None,
        description="A second number, same rules as `phone`.",
        examples=["+12025550199"],
    )
    job_title: Annotated[str | None, _text(200)] = Field(
        default=None, description="At most 200 characters.", examples=["Head of Operations"]
    )
    lead_status: LeadStatus = Field(
        default=None,
        description="A known status or any other slug; case, spaces and hyphens are "
        "normalised (`Do Not Contact` is `do_not_contact`). In an update, null is `new`.",
        examples=["qualified"],
        json_schema_extra={"anyOf": [*LEAD_STATUS_SCHEMA["anyOf"], {"type": "null"}]},
    )
    source: OptionalText100 = Field(
        default=None, description="Where the contact came from.", examples=["trade-show"]
    )
    timezone: TimeZoneName = Field(
        default=None,
        description="An IANA zone name; the contact's call window is kept in it.",
        examples=["America/Chicago"],
    )
    preferred_contact_method: ContactMethod = Field(
        default=None, description="`phone`, `email`, `sms` or another slug.", examples=["phone"]
    )
    notes: Notes = Field(
        default=None, description="Free text, at most 10,000 characters.", examples=["Met at SPI."]
    )
    custom_fields: CustomFields = Field(
        default=None,
        description="Slug keys (at most 64 characters) to JSON values; at most 200 keys and "
        "64 KiB. In an update, the keys given are merged in (null clears them all).",
        examples=[{"roof_type": "flat", "monthly_bill_usd": 240}],
    )
    tags: Tags = Field(
        default=None,
        description="Unique, order kept, each at most 64 characters, at most 50.",
        examples=[["vip", "solar"]],
    )


class ContactPatch(_ContactFields):
    """A partial update: only the fields present are written; ``null`` clears."""

    first_name: Name | None = Field(
        default=None, description="1 to 100 characters, trimmed.", examples=["Ada"]
    )
    last_name: Name | None = Field(
        default=None, description="1 to 100 characters, trimmed.", examples=["Lovelace"]
    )
    do_not_call: StrictBool | None = Field(
        default=None,
        description="`true` excludes the contact from every campaign; null is `false`.",
        examples=[True],
    )
    # At most 9 digits, as in If-Match (api/routes.py): no contact gets near it.
    version: StrictInt | None = Field(
        default=None,
        ge=1,
        le=999_999_999,
        description="The version this update is based on: 412 if the contact has moved on "
        "(as `If-Match`).",
        examples=[3],
    )

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, by snake_case name (``version`` excluded)."""
        sent = self.model_fields_set - {"version"}
        values = {name: getattr(self, name) for name in sent}
        for required in ("first_name", "last_name"):
            if required in values and values[required] is None:
                raise ValidationFailed({required: "Must not be null"})
        for non_null, empty in (("do_not_call", False), ("custom_fields", {}), ("tags", [])):
            if non_null in values and values[non_null] is None:
                values[non_null] = empty
        if "lead_status" in values and values["lead_status"] is None:
            values["lead_status"] = "new"
        return values


class ContactCreate(_ContactFields):
    """The body of a create: names required, everything else optional."""

    team_id: Identifier = Field(
        default=None,
        description="The key's own team (the default); another is 403.",
        examples=["0193a5c4-7e2b-7c41-9a3e-5d8f2b1c6e70"],
    )
    first_name: Name = Field(description="1 to 100 characters, trimmed.", examples=["Ada"])
    last_name: Name = Field(description="1 to 100 characters, trimmed.", examples=["Lovelace"])
    do_not_call: StrictBool = Field(
        default=False,
        description="`true` excludes the contact from every campaign.",
        examples=[False],
    )


class Contact(BaseModel):
    """A contact as the API and the read module return it."""

    id: str = Field(
        description="Assigned by the service (a UUIDv7).",
        examples=["0193a5c6-1f40-7d2a-8b6e-2c9d4e7f1a35"],
    )
    team_id: str = Field(
        description="The team it belongs to; never changes.",
        examples=["0193a5c4-7e2b-7c41-9a3e-5d8f2b1c6e70"],
    )
    company_id: str | None = Field(
        description="A company of the same team, or null.",
        examples=["0193a5c5-3b81-7e90-a4d2-6f1e8c3b5d27"],
    )
    first_name: str = Field(description="1 to 100 characters.", examples=["Ada"])
    last_name: str = Field(description="1 to 100 characters.", examples=["Lovelace"])
    email: str | None = Field(description="A valid address, or null.", examples=["ada@example.com"])
    phone: str | None = Field(description="E.164, or null.", examples=["+12025551234"])
    phone_secondary: str | None = Field(description="E.164, or null.", examples=["+12025550199"])
    job_title: str | None = Field(description="The job title, or null.", examples=["CTO"])
    lead_status: str = Field(
        description="A known status, or another slug a person set (`new` by default).",
        examples=["qualified"],
        json_schema_extra=LEAD_STATUS_SCHEMA,
    )
    source: str | None = Field(
        description="Where the contact came from, or null.", examples=["trade-show"]
    )
    timezone: str | None = Field(
        description="An IANA zone name for the call window, or null.", examples=["America/Chicago"]
    )
    preferred_contact_method: str | None = Field(
        description="`phone`, `email`, `sms` or another slug, or null.", examples=["phone"]
    )
    do_not_call: bool = Field(
        description="`true`: excluded from every campaign; only a person sets it back.",
        examples=[False],
    )
    notes: str | None = Field(description="Free text, or null.", examples=["Met at SPI."])
    custom_fields: dict[str, Any] = Field(
        description="Slug keys to JSON values.", examples=[{"roof_type": "flat"}]
    )
    tags: list[str] = Field(description="Unique tags in the order added.", examples=[["vip"]])
    version: int = Field(description="1 at creation, +1 on every change.", examples=[3])
    created_at: datetime = Field(
        description="When it was created (UTC).", examples=["2026-11-20T15:04:05.123456+00:00"]
    )
    updated_at: datetime = Field(
        description="When it last changed (UTC).", examples=["2026-11-21T09:30:00+00:00"]
    )
    call_count: int = Field(
        description="How many calls the contact has in the calls ledger (a re-analysis of a "
        "call is not another). Read-only, not versioned.",
        examples=[3],
    )
    last_called_at: datetime | None = Field(
        description="When its latest call ended (UTC), or null. Read-only, not versioned.",
        examples=["2026-11-21T09:30:00+00:00"],
    )
    last_call_outcome: str | None = Field(
        description="That call's outcome (`completed`, `voicemail`, `no_answer`, `busy` or "
        "`failed`), or null. Read-only, not versioned.",
        examples=["no_answer"],
    )


# Shown on every contact, kept from its calls (docs/design.md §11): never in a body.
READ_ONLY = ("call_count", "last_called_at", "last_call_outcome")
READ_ONLY_MESSAGE = "Read-only: kept from the contact's calls"

_ALIASES = {
    **{to_camel(name): name for name in READ_ONLY},
    **{
        (info.alias or name): name
        for model in (ContactCreate, ContactPatch)
        for name, info in model.model_fields.items()
    },
}


def field_errors(error: ValidationError) -> dict[str, str]:
    """Pydantic's errors as ``{snake_case_field: message}``, first message per field."""
    details: dict[str, str] = {}
    for item in error.errors(include_url=False):
        loc = item.get("loc") or ("body",)
        field = _ALIASES.get(str(loc[0]), str(loc[0]))
        if item["type"] == "missing":
            message = "Field required"
        elif item["type"] == "extra_forbidden":
            message = READ_ONLY_MESSAGE if field in READ_ONLY else "Unknown field"
        else:
            # Validators raising ValueError get pydantic's "Value error, "
            # prefix; every caller shows the message alone.
            message = item["msg"].removeprefix("Value error, ")
        details.setdefault(field, message)
    return details


_Body = TypeVar("_Body", ContactCreate, ContactPatch)


def _parse_body(model: type[_Body], data: Any, region: str) -> _Body:
    """Validate a body as ``model``, raising ``ValidationFailed`` with per-field messages."""
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    try:
        return model.model_validate(data, context={"region": region})
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from exc


def parse_create(data: Any, *, region: str) -> ContactCreate:
    """Validate a create body (see ``_parse_body``)."""
    return _parse_body(ContactCreate, data, region)


def parse_patch(data: Any, *, region: str) -> ContactPatch:
    """Validate a patch body (see ``_parse_body``)."""
    return _parse_body(ContactPatch, data, region)
