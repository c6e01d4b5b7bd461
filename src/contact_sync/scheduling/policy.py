"""A team's calling policy (docs/design.md §12): its window, days, holidays, caps and retry delays.

The model is the one definition of the policy: the API's ``PUT`` body and
answer, the CLI's file, the stored JSON and the evaluator's input. A partial
body keeps the defaults of what it leaves out, also inside ``retry_after``.
Names are snake_case in answers; requests may use camelCase too.
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
    model_validator,
)
from pydantic.alias_generators import to_camel

from contact_sync.contacts.model import iana_timezones

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_DURATION = re.compile(r"^(\d{1,6})([mhd])$")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MAX_DELAY = timedelta(days=365)
MAX_HOLIDAYS = 1000


def parse_duration(value: Any) -> timedelta:
    """``30m``, ``4h``, ``1d`` → a timedelta; at most 365 days."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
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
    if isinstance(value, str):
        hours, sep, minutes = value.partition(":")
        if not (sep and len(hours) == 2 and len(minutes) == 2 and (hours + minutes).isdigit()):
            raise ValueError("Must be a time of day as HH:MM")
        try:
            return time(int(hours), int(minutes))
        except ValueError:
            raise ValueError("Must be a time of day as HH:MM") from None
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


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class Window(_Strict):
    """The daily window, in the contact's local time: start inclusive, end exclusive."""

    start: Clock = Field(default=time(9, 0), examples=["09:00"])
    end: Clock = Field(default=time(17, 0), examples=["17:00"])

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start >= self.end:
            raise ValueError("start must be earlier than end")
        return self


class RetryAfter(_Strict):
    """How long after an attempt with each outcome the contact may be called again."""

    no_answer: Duration = Field(default=timedelta(hours=4), examples=["4h"])
    busy: Duration = Field(default=timedelta(minutes=30), examples=["30m"])
    voicemail: Duration = Field(default=timedelta(days=1), examples=["1d"])
    failed: Duration = Field(default=timedelta(hours=1), examples=["1h"])
    completed: Duration = Field(default=timedelta(0), examples=["0m"])


class CallingPolicy(_Strict):
    """A team's calling policy; every key has a default (docs/design.md §12)."""

    window: Window = Field(default_factory=Window)
    days: Annotated[
        list[Weekday], AfterValidator(lambda days: sorted(set(days), key=WEEKDAYS.index))
    ] = Field(default_factory=lambda: list(WEEKDAYS), max_length=7 * 4, examples=[["mon", "tue"]])
    holidays: Annotated[list[date], AfterValidator(lambda days: sorted(set(days)))] = Field(
        default_factory=list, max_length=MAX_HOLIDAYS, examples=[["2026-12-25"]]
    )
    default_timezone: Annotated[str, AfterValidator(_zone)] = Field(
        default="America/New_York", max_length=64, examples=["America/Chicago"]
    )
    max_attempts_total: int | None = Field(default=None, ge=1, le=10_000, examples=[6])
    max_attempts_per_day: int | None = Field(default=None, ge=1, le=1_000, examples=[2])
    retry_after: RetryAfter = Field(default_factory=RetryAfter)
    jurisdiction_rules: bool = Field(default=True)


DEFAULT_POLICY = CallingPolicy()
