"""Contact writes and reads made by people (API, CLI, import).

Every write bumps ``version`` by one, records provenance ``api`` for the
fields it set, and adds one history record, all in the caller's transaction
and all through ``contact_sync.contacts.writer``, the writer the event apply
(``contact_sync.calls.apply``) uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select

from contact_sync.accounts.teams import Team, get_team
from contact_sync.clock import utcnow
from contact_sync.contacts import writer as contact_writer
from contact_sync.contacts.companies import check_company
from contact_sync.contacts.model import (
    Contact,
    ContactCreate,
    check_custom_fields_size,
    parse_create,
    parse_patch,
)
from contact_sync.contacts.records import Change, Observation, provenance_from_json
from contact_sync.contacts.suppression import SUPPRESSED, is_suppressed, suppress
from contact_sync.contacts.writer import ContactInsert, ContactUpdate, HistoryRecord
from contact_sync.db.tables import contact_history, contacts
from contact_sync.errors import ContactNotFound, ForbiddenTeam, StaleVersion, ValidationFailed
from contact_sync.fields.coerce import coerce_fields
from contact_sync.fields.store import definitions_for
from contact_sync.ids import new_id
from contact_sync.ops.dead_letters import Subject, erase_naming

# Read paths never load provenance: the public contact does not show it, and
# on real rows it is the largest column.
# Stored for queries, not shown: the observations and what the number says.
_INTERNAL = frozenset({"provenance", "phone_zone", "phone_state"})
CONTACT_COLUMNS = tuple(c for c in contacts.c if c.name not in _INTERNAL)


_CONTACT_FIELDS = tuple(Contact.model_fields)
_ALL_SET = frozenset(_CONTACT_FIELDS)


# Written by hand because pydantic's ``model_construct`` walks every field's
# aliases and defaults: 21 µs a row on pydantic 2.14, two thirds of a
# 6,600-row eligible stream. A row has every field, so what remains of it is
# these four attributes; tests/test_store.py checks the result against a
# validated contact, and that ``Contact`` keeps no extras, private
# attributes or post-init hook that this would skip.
_new_object = object.__new__
_set = object.__setattr__


def _contact(values: dict[str, Any]) -> Contact:
    contact = _new_object(Contact)
    _set(contact, "__dict__", values)
    _set(contact, "__pydantic_fields_set__", set(_ALL_SET))
    _set(contact, "__pydantic_extra__", None)
    _set(contact, "__pydantic_private__", None)
    return contact


def contact_from_row(row: Row[Any]) -> Contact:
    """A stored row as the public contact.

    The row was validated on its way in, so it is not validated again: on
    the read paths this is most of the per-row cost.
    """
    mapping = row._mapping
    return _contact({name: mapping[name] for name in _CONTACT_FIELDS})


def contacts_from_rows(rows: Sequence[Row[Any]]) -> list[Contact]:
    """Rows selected as ``CONTACT_COLUMNS`` as public contacts (the list and stream paths)."""
    if rows and rows[0]._fields != _CONTACT_FIELDS:
        return [contact_from_row(row) for row in rows]
    return [_contact(dict(zip(_CONTACT_FIELDS, row, strict=True))) for row in rows]


def _observed(fields: dict[str, Any], *, source: str, at: datetime) -> dict[str, Observation]:
    """A person's observation of each field set (each custom field on its own)."""
    seen = Observation(source, at.isoformat())
    keys = [name for name in fields if name != "custom_fields"]
    keys += [f"custom_fields.{key}" for key in fields.get("custom_fields") or {}]
    return dict.fromkeys(keys, seen)


def _record(
    *,
    contact_id: str,
    team_id: str,
    version_before: int | None,
    version_after: int,
    at: datetime,
    api_key_id: str | None,
    source: str,
    changes: list[Change] | None = None,
    summary: str | None = None,
) -> HistoryRecord:
    """A person's write in the contact's history (no event, call or skipped values)."""
    return HistoryRecord(
        contact_id=contact_id,
        team_id=team_id,
        version_before=version_before,
        version_after=version_after,
        source=source,
        occurred_at=at,
        recorded_at=at,
        changes=changes or [],
        api_key_id=api_key_id,
        summary=summary,
    )


def _typed(conn: Connection, team: Team, values: dict[str, Any]) -> dict[str, Any]:
    """A person's custom fields as their defined types (docs/design.md §13).

    A value that does not convert, or with the team's ``reject`` setting a key
    without a definition, is 422 naming ``custom_fields.KEY``.
    """
    definitions = definitions_for(conn, team_id=team.id, keys=list(values))
    return coerce_fields(
        values,
        definitions,
        region=team.default_region,
        reject_undefined=team.undefined_custom_fields == "reject",
    )


def _fields_to_create(conn: Connection, *, team_id: str, data: dict[str, Any]) -> ContactCreate:
    """The validated body of a create, checked against the team and its companies."""
    team = get_team(conn, team_id=team_id)
    body = parse_create(data, region=team.default_region)
    if body.team_id is not None and body.team_id != team_id:
        raise ForbiddenTeam("teamId does not match this team")
    if body.custom_fields:
        body = body.model_copy(update={"custom_fields": _typed(conn, team, body.custom_fields)})
    if body.company_id is not None:
        check_company(conn, team_id=team_id, company_id=body.company_id)
    return body


def create_contact(
    conn: Connection,
    *,
    team_id: str,
    data: dict[str, Any],
    api_key_id: str | None = None,
    source: str = "api",
) -> Contact:
    """Validate ``data`` (camelCase or snake_case) and create the contact at version 1."""
    body = _fields_to_create(conn, team_id=team_id, data=data)
    now = utcnow()
    fields = body.model_dump(exclude={"team_id"})
    fields["lead_status"] = fields["lead_status"] or "new"
    fields["custom_fields"] = fields["custom_fields"] or {}
    fields["tags"] = fields["tags"] or []
    # Only what the person sent gets provenance: a defaulted status or flag
    # is no observation, and must not outrank a call that happened earlier.
    set_fields = {
        k: v for k, v in fields.items() if k in body.model_fields_set and v not in (None, {}, [])
    }
    provenance = _observed(set_fields, source=source, at=now)
    numbers = [number for number in (body.phone, body.phone_secondary) if number]
    blocked = any(is_suppressed(conn, team_id, number) for number in numbers)
    if blocked:
        # A number of an erased do-not-call contact: do-not-call, whatever the
        # body says; a person may clear it later with a PATCH, on the record.
        fields["do_not_call"] = set_fields["do_not_call"] = True
        provenance["do_not_call"] = Observation("suppression", now.isoformat())
    row = {**fields, "id": new_id(), "team_id": team_id, "version": 1}
    row.update(created_at=now, updated_at=now)
    contact_writer.insert_contacts(conn, [ContactInsert(row, provenance)])
    row.update(call_count=0, last_called_at=None, last_call_outcome=None)  # no calls yet
    reason = {"do_not_call": SUPPRESSED} if blocked else {}
    changes = [Change(name, None, value, reason.get(name)) for name, value in set_fields.items()]
    record = _record(
        contact_id=row["id"],
        team_id=team_id,
        version_before=None,
        version_after=1,
        at=now,
        api_key_id=api_key_id,
        source=source,
        changes=changes,
    )
    contact_writer.record_history(conn, [record])
    return Contact.model_validate(row)


def _load(
    conn: Connection, *, team_id: str, contact_id: str, lock: bool, key_share: bool = True
) -> Row[Any]:
    if "\x00" in contact_id:  # PostgreSQL text cannot hold it; no id contains it
        raise ContactNotFound(contact_id)
    stmt = select(contacts).where(contacts.c.id == contact_id, contacts.c.team_id == team_id)
    if lock:
        # FOR NO KEY UPDATE: blocks other writers of this row, not inserts
        # of rows that reference it (history has no FK, but companies do).
        # A delete takes FOR UPDATE: it removes the key itself.
        stmt = stmt.with_for_update(key_share=key_share)
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise ContactNotFound(contact_id)
    return row


def get_contact(conn: Connection, *, team_id: str, contact_id: str) -> Contact:
    """The contact of that team, or ``ContactNotFound`` (also for another team's id)."""
    return contact_from_row(_load(conn, team_id=team_id, contact_id=contact_id, lock=False))


def _merge_patch(
    current: dict[str, Any], patch: dict[str, Any]
) -> tuple[dict[str, Any], list[Change]]:
    """Custom fields after a JSON merge-patch (keys given are set, null removes one).

    Also returns the changes, by key.
    """
    merged = dict(current)
    for key, item in patch.items():
        if item is None:
            merged.pop(key, None)
        else:
            merged[key] = item
    changes = [
        Change(f"custom_fields.{key}", current.get(key), merged.get(key))
        for key in sorted(set(current) | set(merged))
        if current.get(key) != merged.get(key)
    ]
    return merged, changes


def _diff(row: Row[Any], updates: dict[str, Any]) -> tuple[dict[str, Any], list[Change]]:
    """The columns that really change and the history entries describing them."""
    new_values: dict[str, Any] = {}
    changes: list[Change] = []
    for name, value in updates.items():
        if name == "custom_fields":
            current = dict(row.custom_fields)
            merged, custom = _merge_patch(current, value)
            if merged != current:
                new_values["custom_fields"] = merged
            changes += custom
        elif getattr(row, name) != value:
            new_values[name] = value
            changes.append(Change(name, getattr(row, name), value))
    return new_values, changes


def _checked_size(new_values: dict[str, Any]) -> None:
    """Each patch is checked alone; the keys it adds to the stored ones must fit too."""
    if "custom_fields" in new_values:
        try:
            check_custom_fields_size(new_values["custom_fields"])
        except ValueError as exc:
            raise ValidationFailed({"custom_fields": str(exc)}) from exc


def update_contact(
    conn: Connection,
    *,
    team_id: str,
    contact_id: str,
    data: dict[str, Any],
    expected_version: int | None = None,
    api_key_id: str | None = None,
) -> Contact:
    """Apply a partial update as a person's edit.

    The row is locked for the length of this short transaction, so a write
    without an expected version applies to the latest one atomically; with
    one, a mismatch raises ``StaleVersion``. A no-op changes nothing.
    """
    team = get_team(conn, team_id=team_id)
    patch = parse_patch(data, region=team.default_region)
    expected = expected_version if expected_version is not None else patch.version
    updates = patch.changes()
    if updates.get("custom_fields"):
        updates["custom_fields"] = _typed(conn, team, updates["custom_fields"])
    row = _load(conn, team_id=team_id, contact_id=contact_id, lock=True)
    if expected is not None and expected != row.version:
        raise StaleVersion(row.version)
    if updates.get("company_id") is not None:
        check_company(conn, team_id=team_id, company_id=updates["company_id"])
    new_values, changes = _diff(row, updates)
    if not changes:
        return contact_from_row(row)
    _checked_size(new_values)
    now = utcnow()
    provenance = provenance_from_json(row.provenance)
    provenance.update(_observed_changes(changes, at=now))
    next_version = ContactUpdate(
        contact_id,
        row.version,
        row.version + 1,
        new_values,
        provenance,
        now,
        team_id=team_id,
        custom_fields_before=row.custom_fields,
    )
    written = contact_writer.update_contact(conn, next_version)
    record = _record(
        contact_id=contact_id,
        team_id=team_id,
        version_before=row.version,
        version_after=row.version + 1,
        at=now,
        api_key_id=api_key_id,
        source="api",
        changes=changes,
    )
    contact_writer.record_history(conn, [record])
    return contact_from_row(written)


def _observed_changes(changes: list[Change], *, at: datetime) -> dict[str, Observation]:
    seen = Observation("api", at.isoformat())
    return {change.field: seen for change in changes}


@dataclass(frozen=True)
class Deletion:
    """What deleting a contact erased (counts only: the record of a delete holds no PII)."""

    dead_letters_erased: int
    numbers_suppressed: int


def delete_contact(
    conn: Connection,
    *,
    team_id: str,
    contact_id: str,
    api_key_id: str | None = None,
    source: str = "api",
) -> Deletion:
    """Delete the contact and erase what the service kept about it, in the caller's transaction.

    ``ContactNotFound`` if it is not the team's. Erasure (README, "Erasure"):
    the contact's history records go (their changes hold its values), the
    team's dead letters that name it become tombstones, and a do-not-call
    contact leaves its numbers, hashed, on the suppression list so that it
    stays do-not-call when it comes back. One history record of the delete
    stays: who (the API key's id) and when, and counts, no field values; the
    history route no longer shows it (the contact is gone), audits read it.
    """
    row = _load(conn, team_id=team_id, contact_id=contact_id, lock=True, key_share=False)
    team = get_team(conn, team_id=team_id)
    now = utcnow()
    contact_writer.delete_contact_rows(conn, team_id=team_id, contact_id=contact_id)
    numbers = [number for number in (row.phone, row.phone_secondary) if number]
    erased = erase_naming(
        conn,
        team_id=team_id,
        subject=Subject(contact_id, frozenset(numbers), row.email, team.default_region),
        now=now,
    )
    suppressed = suppress(conn, team_id=team_id, phones=numbers, now=now) if row.do_not_call else 0
    summary = (
        f"contact deleted; {erased} dead letters erased; "
        f"{suppressed} numbers added to the suppression list"
    )
    record = _record(
        contact_id=contact_id,
        team_id=team_id,
        version_before=row.version,
        version_after=row.version + 1,
        at=now,
        api_key_id=api_key_id,
        source=source,
        summary=summary,
    )
    contact_writer.record_history(conn, [record])
    return Deletion(dead_letters_erased=erased, numbers_suppressed=suppressed)


def list_history(
    conn: Connection,
    *,
    team_id: str,
    contact_id: str,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The contact's change records, newest first (a page of them with ``limit``/``offset``)."""
    _load(conn, team_id=team_id, contact_id=contact_id, lock=False)
    rows = conn.execute(
        select(contact_history)
        .where(contact_history.c.contact_id == contact_id, contact_history.c.team_id == team_id)
        .order_by(
            contact_history.c.version_after.desc(),
            contact_history.c.recorded_at.desc(),
            contact_history.c.id.desc(),
        )
        .limit(limit)
        .offset(offset)
    ).all()
    return [dict(row._mapping) for row in rows]


def count_history(conn: Connection, *, team_id: str, contact_id: str) -> int:
    """How many change records the contact has."""
    return conn.execute(
        select(func.count())
        .select_from(contact_history)
        .where(contact_history.c.contact_id == contact_id, contact_history.c.team_id == team_id)
    ).scalar_one()


def get_provenance(conn: Connection, *, team_id: str, contact_id: str) -> dict[str, Any]:
    """The source and observation of each current value of the contact."""
    return dict(_load(conn, team_id=team_id, contact_id=contact_id, lock=False).provenance)
