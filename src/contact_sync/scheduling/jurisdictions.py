"""The rules that always hold, read from ``data/jurisdictions.json`` (docs/design.md §12).

The federal floor and each state's windows, no-call days, holidays and
rolling-24-hour caps are data with their sources, not code: a lawyer can read
and correct the file without reading Python, and a change to a rule is a
change to one file. The file is validated here when first used; a file that
does not validate fails loudly rather than calling under a half-read rule.
Holidays are explicit local dates (``holiday_years`` says which years).
"""

from __future__ import annotations

import json
from datetime import date, time
from functools import cache
from importlib import resources
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from contact_sync.scheduling.policy import Clock, Weekday


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Rule):
    """Where a rule comes from: a citation a person can look up, and where to read it."""

    citation: Annotated[str, Field(min_length=5)]
    url: HttpUrl


class Hours(_Rule):
    """A daily window, local time: start inclusive, end exclusive."""

    start: Clock
    end: Clock
    source: Source

    @model_validator(mode="after")
    def _ordered(self) -> Hours:
        if self.start >= self.end:
            raise ValueError("start must be earlier than end")
        return self


class DayWindow(Hours):
    """A window that holds on the weekdays listed."""

    days: Annotated[list[Weekday], Field(min_length=1)]


class NoCallDays(_Rule):
    """Weekdays with no calls at all."""

    days: Annotated[list[Weekday], Field(min_length=1)]
    source: Source


class Holiday(_Rule):
    """One named holiday and its dates in the covered years."""

    name: Annotated[str, Field(min_length=1)]
    dates: Annotated[list[date], Field(min_length=1)]


class Holidays(_Rule):
    """Local dates with no calls, with the source of the list."""

    source: Source
    days: Annotated[list[Holiday], Field(min_length=1)]


class AttemptCap(_Rule):
    """At most ``max`` attempts in any rolling 24 hours."""

    max: Annotated[int, Field(ge=1)]
    source: Source


class StateRules(_Rule):
    """One state's rules; each part is optional."""

    name: Annotated[str, Field(min_length=2)]
    windows: list[DayWindow] = Field(default_factory=list)
    no_call_days: NoCallDays | None = None
    holidays: Holidays | None = None
    attempt_cap_24h: AttemptCap | None = None

    @model_validator(mode="after")
    def _one_window_a_day(self) -> StateRules:
        days = [day for window in self.windows for day in window.days]
        if len(days) != len(set(days)):
            raise ValueError("a weekday is in two windows")
        return self

    def window_on(self, weekday: Weekday) -> DayWindow | None:
        """The state's window on ``weekday``, if it narrows that day."""
        return next((w for w in self.windows if weekday in w.days), None)

    def holiday_on(self, day: date) -> str | None:
        """The name of the no-call holiday on ``day``, if any."""
        if self.holidays is None:
            return None
        return next((h.name for h in self.holidays.days if day in h.dates), None)


class HolidayYears(_Rule):
    """The years whose holiday dates the file lists."""

    first: int
    last: int


class Jurisdictions(_Rule):
    """The whole file: the federal floor and the rules per US state (two-letter code)."""

    about: str
    holiday_years: HolidayYears
    floor: Hours
    states: dict[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], StateRules]

    @property
    def floor_window(self) -> tuple[time, time]:
        """The federal floor, local time (start inclusive, end exclusive)."""
        return self.floor.start, self.floor.end


@cache
def load_jurisdictions() -> Jurisdictions:
    """The shipped rules, validated once per process."""
    text = resources.files("contact_sync.scheduling").joinpath("data/jurisdictions.json")
    return Jurisdictions.model_validate(json.loads(text.read_text(encoding="utf-8")))
