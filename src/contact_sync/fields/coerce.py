"""Coercion of custom-field values to their defined type (docs/design.md §13).

Pure, and the one place that turns loose input into a field's canonical
value, for a person's write and for a call's extraction alike: ``"$7.5k"``
is ``7500``, ``"YES"`` is ``true``, ``"Solar panels"`` is ``"solar"``. A
value that does not convert raises ``InvalidValue`` and nothing else: the
API answers 422 naming ``custom_fields.KEY``, the merge skips it with
reason ``invalid_value``. Coercing a canonical value gives it back
unchanged, so values may be coerced again (a replay, a re-save) safely.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from contact_sync.contacts.model import normalise_email
from contact_sync.contacts.phones import normalise_phone
from contact_sync.errors import ValidationFailed
from contact_sync.fields.definitions import FieldDefinition, match_form
from contact_sync.fields.patterns import MAX_TEXT_LENGTH, compiled
from contact_sync.storable import MAX_INTEGER, MIN_INTEGER, is_storable_text

MAX_NUMBER_TEXT = 64  # "$1,000,000,000.00" fits many times over; 10,000 digits do not
MAX_URL = 2000
MAX_SELECTED = 200
# Whole numbers up to a double's exact range are stored as integers: 7000, not 7000.0.
_EXACT = 2**53
_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_NUMBER = re.compile(
    r"(?P<sign>[+-]?)[$€£¥]?(?P<sign2>[+-]?)"
    r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?P<fraction>\.[0-9]+)?(?P<suffix>[kmb]?)",
    re.ASCII,
)
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})",
    re.ASCII,
)


class InvalidValue(ValueError):
    """A value that is not of its field's type; the message says what was expected."""


def _string(raw: Any, what: str, limit: int) -> str:
    if not isinstance(raw, str):
        raise InvalidValue(f"Must be {what}")
    if len(raw) > limit:
        raise InvalidValue(f"Must be {what} (at most {limit} characters)")
    if not is_storable_text(raw):
        raise InvalidValue("Must be valid Unicode text without NUL characters")
    return raw.strip()


def _canonical_number(value: Decimal | int | float) -> int | float:
    """Whole numbers as integers (7000, not 7000.0) while exact; others as finite floats."""
    if isinstance(value, int):
        if not MIN_INTEGER <= value <= MAX_INTEGER:
            raise InvalidValue("Must lie between -2^63 and 2^63-1")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue("Must be a finite number")
        return int(value) if value.is_integer() and abs(value) <= _EXACT else value
    if value == value.to_integral_value():
        whole = int(value)
        if MIN_INTEGER <= whole <= MAX_INTEGER:
            return whole
    # A fraction too fine for a float rounds to its nearest one, which may be whole
    # ("-1381124567163842.875"): canonical like any other float, so stored once.
    return _canonical_number(float(value))


def _parse_number(text: str) -> int | float:
    compact = "".join(text.split()).lower()
    found = _NUMBER.fullmatch(compact)
    if found is None or not (found["whole"] or found["fraction"]):
        raise InvalidValue("Must be a number such as 7000, 7,000, $7.5k or 1.2M")
    if found["sign"] and found["sign2"]:
        raise InvalidValue("Must be a number such as 7000, 7,000, $7.5k or 1.2M")
    digits = (found["whole"] or "0").replace(",", "") + (found["fraction"] or "")
    try:
        amount = Decimal(digits) * _SUFFIXES[found["suffix"]]
    except InvalidOperation:
        raise InvalidValue("Must be a number") from None
    if "-" in (found["sign"], found["sign2"]):
        amount = -amount
    return _canonical_number(amount)


def _number_of(raw: Any) -> int | float:
    if isinstance(raw, bool):
        raise InvalidValue("Must be a number, not true or false")
    if isinstance(raw, int | float):
        return _canonical_number(raw)
    return _parse_number(_string(raw, "a number", MAX_NUMBER_TEXT))


def _bounded(definition: FieldDefinition, value: int | float) -> int | float:
    if definition.minimum is not None and value < definition.minimum:
        raise InvalidValue(f"Must be at least {definition.minimum}")
    if definition.maximum is not None and value > definition.maximum:
        raise InvalidValue(f"Must be at most {definition.maximum}")
    return value


def _number(definition: FieldDefinition, raw: Any, _: str) -> Any:
    return _bounded(definition, _number_of(raw))


def _integer(definition: FieldDefinition, raw: Any, _: str) -> Any:
    value = _number_of(raw)
    if not isinstance(value, int):
        raise InvalidValue("Must be a whole number")
    return _bounded(definition, value)


def _boolean(_: FieldDefinition, raw: Any, __: str) -> Any:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return raw == 1
    if isinstance(raw, str) and len(raw) <= 16:
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    raise InvalidValue("Must be true or false (yes/no, y/n, 1/0 are read too)")


def _date(_: FieldDefinition, raw: Any, __: str) -> Any:
    text = _string(raw, "a date such as 2026-12-24", 64)
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text).isoformat()
        if _DATE_TIME.fullmatch(text):
            datetime.fromisoformat(text.replace("z", "Z"))
            return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        pass
    raise InvalidValue("Must be a date such as 2026-12-24 (or an ISO date and time)")


def _datetime(_: FieldDefinition, raw: Any, __: str) -> Any:
    text = _string(raw, "a date and time with an offset, such as 2026-12-24T15:00:00Z", 64)
    if _DATE_TIME.fullmatch(text):
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
            return parsed.astimezone(UTC).isoformat()
        except (ValueError, OverflowError):
            pass
    raise InvalidValue("Must be a date and time with an offset, such as 2026-12-24T15:00:00Z")


def _option(definition: FieldDefinition, raw: Any) -> str:
    if not isinstance(raw, str) or len(raw) > MAX_TEXT_LENGTH:
        raise InvalidValue("Must be one of the field's options")
    found = definition.words.get(match_form(raw))
    if found is None:
        values = ", ".join(o.value for o in definition.options[:10])
        more = ", ..." if len(definition.options) > 10 else ""
        raise InvalidValue(f"Must be one of the field's options ({values}{more})")
    return found


def _select(definition: FieldDefinition, raw: Any, _: str) -> Any:
    return _option(definition, raw)


def _multi_select(definition: FieldDefinition, raw: Any, _: str) -> Any:
    if isinstance(raw, str):
        if len(raw) > MAX_TEXT_LENGTH:
            raise InvalidValue(f"Must be at most {MAX_TEXT_LENGTH} characters")
        items: list[Any] = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise InvalidValue("Must be a list of options or a comma-separated string")
    if len(items) > MAX_SELECTED:
        raise InvalidValue(f"Must hold at most {MAX_SELECTED} options")
    chosen = {_option(definition, item) for item in items}
    return sorted(chosen, key=definition.positions.__getitem__)


def _email(_: FieldDefinition, raw: Any, __: str) -> Any:
    text = _string(raw, "an email address", 320)
    try:
        return normalise_email(text)
    except ValueError:
        raise InvalidValue("Must be a valid email address") from None


def _phone(_: FieldDefinition, raw: Any, region: str) -> Any:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 10**16:
        raw = str(raw)
    text = _string(raw, "a phone number", 40)
    try:
        return normalise_phone(text, region)
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None


def _url(_: FieldDefinition, raw: Any, __: str) -> Any:
    text = _string(raw, "an http or https URL", MAX_URL)
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise InvalidValue("Must be an http or https URL without spaces")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise InvalidValue("Must be an http or https URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue("Must be an http or https URL")
    return scheme + text[len(parts.scheme) :]


def _text(definition: FieldDefinition, raw: Any, _: str) -> Any:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(_canonical_number(raw))
    text = _string(raw, "text", MAX_TEXT_LENGTH)
    if not text:
        raise InvalidValue("Must not be empty")
    if definition.pattern is not None and compiled(definition.pattern).fullmatch(text) is None:
        raise InvalidValue(f"Must match the pattern {definition.pattern}")
    return text


_COERCERS: dict[str, Callable[[FieldDefinition, Any, str], Any]] = {
    "text": _text,
    "number": _number,
    "integer": _integer,
    "boolean": _boolean,
    "date": _date,
    "datetime": _datetime,
    "select": _select,
    "multi_select": _multi_select,
    "email": _email,
    "phone": _phone,
    "url": _url,
}


def coerce(definition: FieldDefinition, raw: Any, *, region: str = "US") -> Any:
    """``raw`` as ``definition``'s canonical value, or ``InvalidValue``.

    ``region`` reads national phone numbers (the team's default region).
    """
    return _COERCERS[definition.type](definition, raw, region)


def coerce_fields(
    values: Mapping[str, Any],
    definitions: Mapping[str, FieldDefinition],
    *,
    region: str,
    reject_undefined: bool,
) -> dict[str, Any]:
    """A person's custom fields, coerced: ``ValidationFailed`` naming each ``custom_fields.KEY``.

    ``None`` (a patch's removal of a key) passes through.
    """
    coerced: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, raw in values.items():
        definition = definitions.get(key)
        if raw is None:
            coerced[key] = None
        elif definition is None:
            if reject_undefined:
                problems[f"custom_fields.{key}"] = "No such custom field is defined for this team"
            coerced[key] = raw
        else:
            try:
                coerced[key] = coerce(definition, raw, region=region)
            except InvalidValue as exc:
                problems[f"custom_fields.{key}"] = str(exc)
    if problems:
        raise ValidationFailed(problems)
    return coerced
