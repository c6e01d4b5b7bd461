"""Contact writes and reads made by people (API, CLI, import).

Every write bumps ``version`` by one, records provenance ``api`` for the
fields it set, and adds one history record, all in the caller's transaction
and all through ``contact_sync.contacts.writer``, the writer the event apply
(``contact_sync.calls.apply``) uses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select

from contact_sync.accounts.teams import Team, get_team
from contact_sync.clock import utcnow
from contact_sync.contacts import writer as contact_writer
from contact_sync.contacts.companies import check_company
from contact_sync.contacts.duplicates import check_new_numbers
from contact_sync.contacts.edits import (
    NO_CALLS,
    checked_size,
    diff,
    new_contact,
    observed_changes,
    person_record,
)
from contact_sync.contacts.model import Contact, ContactCreate, parse_create, parse_patch
from contact_sync.contacts.records import provenance_from_json
from contact_sync.contacts.suppression import is_suppressed, suppress
from contact_sync.contacts.writer import ContactInsert, ContactUpdate
from contact_sync.db.tables import contact_history, contacts
from contact_sync.errors import ContactNotFound, ForbiddenTeam, StaleVersion
from contact_sync.fields.coerce import coerce_fields
from contact_sync.fields.store import definitions_for
from contact_sync.ops.dead_letters import Subject, erase_naming

# Read paths never load provenance: the public contact does not show it, and
# on real rows it is the largest column.
# Stored for queries, not shown: the observations and what the number says.
_INTERNAL = frozenset({"provenance", "phone_zone", "phone_state", "attempt_count"})
CONTACT_COLUMNS = tuple(c for c in contacts.c if c.name not in _INTERNAL)


_CONTACT_FIELDS = tuple(Contact.model_fields)
CONTACT_FIELDS = _CONTACT_FIELDS  # the public contact's fields, in the API's order
PHONE_FIELDS = ("phone", "phone_secondary")
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


def contact_from_values(values: Mapping[Any, Any]) -> Contact:
    """A contact from a mapping of (at least) its fields, validated on their way in."""
    return _contact({name: values[name] for name in _CONTACT_FIELDS})


_DATETIMES = frozenset(
    name for name, info in Contact.model_fields.items() if "datetime" in str(info.annotation)
)
DATETIME_FIELDS = _DATETIMES  # those of them that hold datetimes


def _utc_text(moment: datetime | None) -> str | None:
    # What pydantic's JSON mode writes for a UTC datetime: ISO 8601 with "Z".
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def contacts_json(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows selected as ``CONTACT_COLUMNS`` (then any others) as the API's JSON values,
    equal to ``Contact.model_dump(mode="json")`` of each, without building the ``Contact``.

    The stream's path (docs/design.md §12): values are read as stored, datetimes
    written as pydantic writes them; tests/test_query.py holds the two equal.
    """
    if not rows:
        return []
    names = _CONTACT_FIELDS
    if tuple(rows[0]._fields[: len(names)]) != names:
        return [contact_from_row(row).model_dump(mode="json") for row in rows]
    out = []
    for row in rows:
        values = dict(zip(names, row, strict=False))
        for name in _DATETIMES:
            values[name] = _utc_text(values[name])
        out.append(values)
    return out


def contact_from_json(values: dict[str, Any]) -> Contact:
    """A contact from its API JSON values (``contacts_json``'s), datetimes read back."""
    read = {name: values[name] for name in _CONTACT_FIELDS}
    for name in _DATETIMES:
        if read[name] is not None:
            read[name] = datetime.fromisoformat(read[name])
    return _contact(read)


def contacts_from_rows(rows: Sequence[Row[Any]]) -> list[Contact]:
    """Rows selected as ``CONTACT_COLUMNS`` as public contacts (the list and stream paths)."""
    if rows and rows[0]._fields != _CONTACT_FIELDS:
        return [contact_from_row(row) for row in rows]
    return [_contact(dict(zip(_CONTACT_FIELDS, row, strict=True))) for row in rows]


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


def _fields_to_create(conn: Connection, *, team: Team, data: dict[str, Any]) -> ContactCreate:
    """The validated body of a create, checked against the team and its companies."""
    team_id = team.id
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
    team = get_team(conn, team_id=team_id)
    body = _fields_to_create(conn, team=team, data=data)
    numbers = {name: getattr(body, name) for name in PHONE_FIELDS if getattr(body, name)}
    if team.duplicate_phones == "reject":
        check_new_numbers(conn, team_id=team_id, numbers=numbers)
    now = utcnow()
    blocked = any(is_suppressed(conn, team_id, number) for number in numbers.values())
    row, provenance, changes = new_contact(
        body, team_id=team_id, source=source, at=now, suppressed=blocked
    )
    contact_writer.insert_contacts(conn, [ContactInsert(row, provenance)])
    row.update(NO_CALLS)
    record = person_record(
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
    numbers = {name: updates[name] for name in PHONE_FIELDS if updates.get(name)}
    if team.duplicate_phones == "reject":
        # Before the row lock: every writer takes the number locks first.
        check_new_numbers(conn, team_id=team_id, numbers=numbers, contact_id=contact_id)
    row = _load(conn, team_id=team_id, contact_id=contact_id, lock=True)
    if expected is not None and expected != row.version:
        raise StaleVersion(row.version)
    if updates.get("company_id") is not None:
        check_company(conn, team_id=team_id, company_id=updates["company_id"])
    new_values, changes = diff(row._mapping, updates)
    if not changes:
        return contact_from_row(row)
    checked_size(new_values)
    now = utcnow()
    provenance = provenance_from_json(row.provenance)
    provenance.update(observed_changes(changes, source="api", at=now))
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
    record = person_record(
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
    record = person_record(
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
