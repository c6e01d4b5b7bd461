"""A team's calling policy (docs/design.md §12): its window, days, holidays, caps and retry delays.

The model is the one definition of the policy: the API's ``PUT`` body and
answer, the CLI's file, the stored JSON and the evaluator's input. A partial
body keeps the defaults of what it leaves out, also inside ``retry_after``.
Names are snake_case in answers; requests may use camelCase too.

Values take their wire form only: ``"09:00"``, ``"4h"``, ``"2026-12-25"``,
JSON integers and booleans. Pydantic's lax parsing would also take ``9``
(seconds) as a time, a Unix timestamp as a date, ``true`` as a cap of 1 and
``"yes"`` as true: a policy must say what its author meant, or be refused.
"""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake
from pydantic_core import PydanticCustomError

from contact_sync.contacts.model import iana_timezones
from contact_sync.errors import ValidationFailed

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# ASCII digits only, the whole text: ``\d`` takes "٤" and ``$`` a final newline.
_DURATION = re.compile(r"([0-9]{1,6})([mhd])", re.ASCII)
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MAX_DELAY = timedelta(days=365)
MAX_HOLIDAYS = 1000
MAX_ATTEMPTS_TOTAL = 10_000
MAX_ATTEMPTS_PER_DAY = 1_000


def parse_duration(value: Any) -> timedelta:
    """``30m``, ``4h``, ``1d`` → a timedelta; at most 365 days."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("Must be a duration such as 30m, 4h or 1d")
    delay = int(match.group(1)) * _UNIT[match.group(2)]
    if delay > MAX_DELAY:
        raise ValueError("Must be at most 365d")
    return delay


def format_duration(delay: timedelta) -> str:
    """The shortest of ``Nd``, ``Nh``, ``Nm`` that says ``delay`` exactly."""
    minutes = int(delay.total_seconds()) // 60
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes and minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def _clock(value: Any) -> Any:
    if isinstance(value, time):
        return value
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("Must be a time of day as HH:MM, such as 09:00")
    return time(int(match.group(1)), int(match.group(2)))


def _date(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if not (isinstance(value, str) and _DATE.fullmatch(value)):
        raise ValueError("Must be a date as YYYY-MM-DD, such as 2026-12-25")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError("Must be a date that exists, as YYYY-MM-DD") from None


def _holidays(value: Any) -> Any:
    # Counted before each item is parsed: a body of 80,000 dates is refused at once.
    if isinstance(value, list) and len(value) > MAX_HOLIDAYS:
        raise ValueError(f"Must list at most {MAX_HOLIDAYS} dates, not {len(value)}")
    return value


def _zone(value: str) -> str:
    if value not in iana_timezones():
        raise ValueError("Must be a valid IANA timezone such as America/New_York")
    return value


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
Clock = Annotated[
    time, BeforeValidator(_clock), PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str)
]
Day = Annotated[date, BeforeValidator(_date), PlainSerializer(date.isoformat, return_type=str)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class Window(_Strict):
    """The daily window, in the contact's local time: start inclusive, end exclusive."""

    start: Clock = Field(
        default=time(9, 0),
        description="The first minute calls may start, local time of the contact (HH:MM).",
        examples=["09:00"],
    )
    end: Clock = Field(
        default=time(17, 0),
        description="Calls stop here (exclusive), local time of the contact; after `start`.",
        examples=["17:00"],
    )

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start >= self.end:
            # Named on the key the author sent: a lone start of 18:00 is wrong, not the default end.
            key = "end" if "end" in self.model_fields_set else "start"
            other = self.start if key == "end" else self.end
            relation = "later" if key == "end" else "earlier"
            message = f"Must be {relation} than {'start' if key == 'end' else 'end'} ({{other}})"
            raise PydanticCustomError(
                "window_order", message, {"key": key, "other": other.strftime("%H:%M")}
            )
        return self


def _delay(default: timedelta, what: str) -> Any:
    return Field(
        default=default,
        description=f"Wait after an attempt whose outcome was {what} (Nm, Nh or Nd, ≤ 365d).",
        examples=[format_duration(default)],
    )


class RetryAfter(_Strict):
    """How long after an attempt with each outcome the contact may be called again."""

    no_answer: Duration = _delay(timedelta(hours=4), "`no_answer`")
    busy: Duration = _delay(timedelta(minutes=30), "`busy`")
    voicemail: Duration = _delay(timedelta(days=1), "`voicemail`")
    failed: Duration = _delay(timedelta(hours=1), "`failed`")
    completed: Duration = _delay(timedelta(0), "`completed`")


def _weekdays(days: list[Weekday]) -> list[Weekday]:
    if not days:
        raise ValueError("Must name at least one day, such as mon")
    return sorted(set(days), key=WEEKDAYS.index)


class CallingPolicy(_Strict):
    """A team's calling policy; every key has a default (docs/design.md §12)."""

    window: Window = Field(
        default_factory=Window,
        description="The daily calling window in the contact's local time (clamped to "
        "08:00-21:00 and the jurisdiction rules).",
        examples=[{"start": "09:00", "end": "17:00"}],
    )
    days: Annotated[list[Weekday], AfterValidator(_weekdays)] = Field(
        default_factory=lambda: list(WEEKDAYS),
        max_length=7 * 4,
        description="The contact's local weekdays calls are allowed on (at least one).",
        examples=[["mon", "tue", "wed", "thu", "fri"]],
    )
    holidays: Annotated[
        list[Day], BeforeValidator(_holidays), AfterValidator(lambda days: sorted(set(days)))
    ] = Field(
        default_factory=list,
        description=f"Local dates of the contact with no calls (YYYY-MM-DD, at most "
        f"{MAX_HOLIDAYS}).",
        examples=[["2026-12-25", "2027-01-01"]],
    )
    default_timezone: Annotated[str, AfterValidator(_zone)] = Field(
        default="America/New_York",
        max_length=64,
        description="The zone of a contact with no timezone whose number maps to no single zone.",
        examples=["America/Chicago"],
    )
    max_attempts_total: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_ATTEMPTS_TOTAL,
        description="At most this many attempts per contact, ever; null: no cap.",
        examples=[6],
    )
    max_attempts_per_day: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_ATTEMPTS_PER_DAY,
        description="At most this many attempts per local calendar day of the contact; "
        "null: no cap.",
        examples=[2],
    )
    retry_after: RetryAfter = Field(
        default_factory=RetryAfter,
        description="The wait after an attempt, by its outcome; missing outcomes keep theirs.",
        examples=[{"busy": "1h", "voicemail": "2d"}],
    )
    jurisdiction_rules: StrictBool = Field(
        default=True,
        description="Apply the shipped US state rules (false only for teams calling no US "
        "numbers).",
        examples=[True],
    )


DEFAULT_POLICY = CallingPolicy()


_CAPS = {"max_attempts_total": MAX_ATTEMPTS_TOTAL, "max_attempts_per_day": MAX_ATTEMPTS_PER_DAY}


def policy_errors(error: ValidationError) -> dict[str, str]:
    """Pydantic's errors as ``{"retry_after.busy": message}``: the snake_case path of each
    bad key (list items by index, ``holidays.3``), its first message.

    An unknown key is named as sent; a known one in snake_case whichever spelling came.
    """
    details: dict[str, str] = {}
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item.get("loc", ())]
        ctx = item.get("ctx") or {}
        if item["type"] == "window_order":
            loc.append(str(ctx["key"]))
        known = loc[:-1] if item["type"] == "extra_forbidden" else loc
        path = [to_snake(part) for part in known] + loc[len(known) :]
        details.setdefault(".".join(path) or "body", _message(item))
    return details


def _message(item: Any) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        return "Unknown key"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "Must be a JSON object"
    if kind == "list_type":
        return "Must be a JSON array"
    if kind == "literal_error":
        return "Must be one of mon, tue, wed, thu, fri, sat, sun"
    if kind == "bool_type":
        return "Must be true or false"
    if kind == "string_type":
        return "Must be a string"
    cap = _CAPS.get(to_snake(str(item.get("loc", ("",))[0])))
    if cap is not None and kind in ("int_type", "greater_than_equal", "less_than_equal"):
        return f"Must be a whole number from 1 to {cap}, or null for no cap"
    message: str = item["msg"]
    return message.removeprefix("Value error, ")


def parse_policy(data: Any) -> CallingPolicy:
    """``data`` (a parsed JSON object) as a policy, or ``ValidationFailed`` naming each bad key."""
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    try:
        return CallingPolicy.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(policy_errors(exc)) from None


def policy_json(policy: CallingPolicy) -> dict[str, Any]:
    """The policy as stored and answered: snake_case, the wire forms (``"4h"``, ``"09:00"``)."""
    return policy.model_dump(mode="json")
