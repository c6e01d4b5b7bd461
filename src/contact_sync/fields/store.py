"""A team's custom-field definitions in the database (docs/design.md §13).

Services: they run in their caller's unit of work. The event apply loads
the definitions of a batch's teams with one query (``definitions_by_team``),
never one per event; a person's write loads only the keys it sends.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from contact_sync.clock import utcnow
from contact_sync.db.tables import custom_field_definitions as table
from contact_sync.db.tables import teams
from contact_sync.errors import NotFound, TeamNotFound, ValidationFailed
from contact_sync.fields.definitions import (
    MAX_DEFINITIONS,
    AlreadyDefined,
    FieldDefinition,
    apply_patch,
    definition_from_stored,
    parse_definition,
    spec_json,
)

__all__ = ["AlreadyDefined", "FieldNotFound", "StoredDefinition"]


class FieldNotFound(NotFound):
    """No definition with that key in the team."""


@dataclass(frozen=True)
class StoredDefinition:
    """A definition with its times, as the API shows it."""

    definition: FieldDefinition
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            **self.definition.to_dict(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _stored(row: Any) -> StoredDefinition:
    return StoredDefinition(definition_from_stored(row._mapping), row.created_at, row.updated_at)


def _columns(definition: FieldDefinition) -> dict[str, Any]:
    return {
        "label": definition.label,
        "type": definition.type,
        "description": definition.description,
        "spec": spec_json(definition),
        "ai_extractable": definition.ai_extractable,
    }


def list_definitions(conn: Connection, *, team_id: str) -> list[StoredDefinition]:
    """The team's definitions, oldest first."""
    rows = conn.execute(
        select(table).where(table.c.team_id == team_id).order_by(table.c.created_at, table.c.key)
    )
    return [_stored(row) for row in rows]


def _row(conn: Connection, team_id: str, key: str, *, lock: bool = False) -> Any:
    if "\x00" in key or len(key) > 64:
        raise FieldNotFound(f"no custom field {key[:64]!r}")
    stmt = select(table).where(table.c.team_id == team_id, table.c.key == key)
    row = conn.execute(stmt.with_for_update() if lock else stmt).one_or_none()
    if row is None:
        raise FieldNotFound(f"no custom field {key!r}")
    return row


def get_definition(conn: Connection, *, team_id: str, key: str) -> StoredDefinition:
    """One definition of the team, or ``FieldNotFound`` (also for another team's key)."""
    return _stored(_row(conn, team_id, key))


def define(conn: Connection, *, team_id: str, data: Any) -> StoredDefinition:
    """Validate and store a new definition; a key defined already is ``AlreadyDefined``.

    The team's row is locked so that two concurrent defines cannot both pass
    the count check; at most ``MAX_DEFINITIONS`` per team.
    """
    definition = parse_definition(data)
    locked = conn.execute(
        select(teams.c.id).where(teams.c.id == team_id).with_for_update()
    ).one_or_none()
    if locked is None:
        raise TeamNotFound(team_id)
    count = conn.execute(
        select(func.count()).select_from(table).where(table.c.team_id == team_id)
    ).scalar_one()
    exists = conn.execute(
        select(table.c.key).where(table.c.team_id == team_id, table.c.key == definition.key)
    ).first()
    if exists is not None:
        raise AlreadyDefined(f"Custom field {definition.key!r} is already defined")
    if count >= MAX_DEFINITIONS:
        raise ValidationFailed({"key": f"A team may define at most {MAX_DEFINITIONS} fields"})
    now = utcnow()
    values = {"team_id": team_id, "key": definition.key, **_columns(definition)}
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**values, created_at=now, updated_at=now))
    except IntegrityError:
        raise AlreadyDefined(f"Custom field {definition.key!r} is already defined") from None
    return StoredDefinition(definition, now, now)


def change(conn: Connection, *, team_id: str, key: str, data: Any) -> StoredDefinition:
    """Apply a ``PATCH``: label, description, options, min/max, pattern, aiExtractable."""
    current = _stored(_row(conn, team_id, key, lock=True))
    changed = apply_patch(current.definition, data)
    if changed == current.definition:
        return current
    now = utcnow()
    conn.execute(
        update(table)
        .where(table.c.team_id == team_id, table.c.key == key)
        .values(**_columns(changed), updated_at=now)
    )
    return StoredDefinition(changed, current.created_at, now)


def remove(conn: Connection, *, team_id: str, key: str) -> None:
    """Delete a definition; the contacts' values stay, untyped."""
    _row(conn, team_id, key)
    conn.execute(delete(table).where(table.c.team_id == team_id, table.c.key == key))


def definitions_for(
    conn: Connection, *, team_id: str, keys: Collection[str]
) -> dict[str, FieldDefinition]:
    """The team's definitions of ``keys`` (a person's write: only what it sends)."""
    wanted = sorted(k for k in keys if isinstance(k, str) and len(k) <= 64 and "\x00" not in k)
    if not wanted:
        return {}
    rows = conn.execute(select(table).where(table.c.team_id == team_id, table.c.key.in_(wanted)))
    return {row.key: definition_from_stored(row._mapping) for row in rows}


def definitions_by_team(
    conn: Connection, team_ids: Iterable[str]
) -> dict[str, dict[str, FieldDefinition]]:
    """Every definition of these teams, in one query (a batch of events loads them once)."""
    found: dict[str, dict[str, FieldDefinition]] = {}
    ids = sorted(set(team_ids))
    if not ids:
        return found
    for row in conn.execute(_OF_TEAMS, {"ids": ids}):
        found.setdefault(row.team_id, {})[row.key] = definition_from_stored(row._mapping)
    return found


# Built once, as a batch's statements are (db/bulk.rows_source).
_OF_TEAMS = select(table).where(table.c.team_id.in_(bindparam("ids", expanding=True)))
