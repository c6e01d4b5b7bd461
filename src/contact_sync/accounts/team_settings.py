"""A team's settings for what calls and people may write (docs/design.md §13).

``undefined_custom_fields`` (``accept``: keys without a definition are stored
untyped; ``reject``: refused), ``min_confidence`` (below it an extracted value
is skipped; unset means the service's default) and ``calls_overwrite_people``
(whether a call may replace a value a person set), and ``duplicate_phones``
(``allow``, or ``reject``: no two contacts of the team share a number,
docs/design.md §14). Read by the API writes and, once per batch, by the
event apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Connection, update

from contact_sync.accounts.teams import get_team
from contact_sync.db.tables import teams
from contact_sync.errors import ValidationFailed

UndefinedFields = Literal["accept", "reject"]
UNDEFINED_FIELDS: tuple[str, ...] = get_args(UndefinedFields)
DuplicatePhones = Literal["allow", "reject"]
DUPLICATE_PHONES: tuple[str, ...] = get_args(DuplicatePhones)
_NAMES = {
    "undefined_custom_fields": "undefined_custom_fields",
    "undefinedCustomFields": "undefined_custom_fields",
    "min_confidence": "min_confidence",
    "minConfidence": "min_confidence",
    "calls_overwrite_people": "calls_overwrite_people",
    "callsOverwritePeople": "calls_overwrite_people",
    "duplicate_phones": "duplicate_phones",
    "duplicatePhones": "duplicate_phones",
}


@dataclass(frozen=True)
class TeamSettings:
    """The settings as the API shows them (``min_confidence`` with the default filled in)."""

    undefined_custom_fields: str
    min_confidence: float
    calls_overwrite_people: bool
    duplicate_phones: str = "allow"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def get_team_settings(
    conn: Connection, *, team_id: str, default_min_confidence: float
) -> TeamSettings:
    """The team's settings; ``TeamNotFound`` for no team."""
    team = get_team(conn, team_id=team_id)
    confidence = team.min_confidence
    return TeamSettings(
        team.undefined_custom_fields,
        default_min_confidence if confidence is None else confidence,
        team.calls_overwrite_people,
        team.duplicate_phones,
    )


def _confidence(value: Any) -> float | None:
    if value is None:
        return None  # back to the service's default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed({"min_confidence": "Must be a number from 0 to 1"})
    if not 0 <= value <= 1 or not math.isfinite(value):  # compared first: 10**400 is no float
        raise ValidationFailed({"min_confidence": "Must be a number from 0 to 1"})
    return float(value)


def _parse(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    values: dict[str, Any] = {}
    for name, value in data.items():
        snake = _NAMES.get(name)
        if snake is None:
            raise ValidationFailed({str(name)[:64]: "Unknown field"})
        if snake in values:
            raise ValidationFailed({snake: "Must be given once"})
        values[snake] = value
    if "undefined_custom_fields" in values and values["undefined_custom_fields"] not in (
        UNDEFINED_FIELDS
    ):
        raise ValidationFailed({"undefined_custom_fields": "Must be accept or reject"})
    if "duplicate_phones" in values and values["duplicate_phones"] not in DUPLICATE_PHONES:
        raise ValidationFailed({"duplicate_phones": "Must be allow or reject"})
    if "calls_overwrite_people" in values and not isinstance(
        values["calls_overwrite_people"], bool
    ):
        raise ValidationFailed({"calls_overwrite_people": "Must be true or false"})
    if "min_confidence" in values:
        values["min_confidence"] = _confidence(values["min_confidence"])
    return values


def put_team_settings(
    conn: Connection, *, team_id: str, data: Any, default_min_confidence: float
) -> TeamSettings:
    """Set the settings the body names (the others keep their values); answer all of them.

    ``min_confidence: null`` goes back to the service's default.
    """
    values = _parse(data)
    get_team(conn, team_id=team_id)
    if values:
        conn.execute(update(teams).where(teams.c.id == team_id).values(**values))
    return get_team_settings(conn, team_id=team_id, default_min_confidence=default_min_confidence)
