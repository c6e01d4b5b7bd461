"""Upsert: create or update contacts matched by number or address (docs/design.md §14).

One call handles a whole list (an API batch, or a chunk of a CSV import) in a
few set-based statements, whatever its length: one to lock the list's keys,
one to read the contacts they match, one to insert the new contacts, one per
set of changed columns to update the others, one for the history records.
The items apply in order against that state, held here: an item that repeats
a person sees what the items before it did, as it would one call at a time.

Matching is within the team: ``phone`` compares the item's number (read in
the team's region) with each contact's ``phone`` and ``phone_secondary``,
``email`` compares addresses without case; the keys are tried in the order
given and the first that matches decides. None: a contact is created. One:
it is updated with the semantics of a ``PATCH`` (only the fields sent; no
change, no new version and no history). Several: the item fails with
``AmbiguousMatch``. Concurrent upserts of one new person create one contact:
the keys are locked before they are read (``contacts.duplicates``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, func, select, union_all

from contact_sync.accounts.teams import Team, get_team
from contact_sync.contacts import writer as contact_writer
from contact_sync.contacts.duplicates import among, email_key, holding, lock_keys, phone_key
from contact_sync.contacts.edits import (
    NO_CALLS,
    checked_size,
    diff,
    new_contact,
    observed_changes,
    patch_of,
    person_record,
)
from contact_sync.contacts.model import Contact, ContactCreate, parse_create
from contact_sync.contacts.records import Provenance, provenance_from_json
from contact_sync.contacts.store import (
    CONTACT_COLUMNS,
    PHONE_FIELDS,
    contact_from_values,
)
from contact_sync.contacts.suppression import suppressed_numbers
from contact_sync.contacts.writer import ContactInsert, ContactUpdate, HistoryRecord
from contact_sync.db.tables import companies, contacts
from contact_sync.errors import (
    AmbiguousMatch,
    Conflict,
    ContactSyncError,
    DuplicatePhone,
    ForbiddenTeam,
    ValidationFailed,
)
from contact_sync.fields.coerce import coerce_fields
from contact_sync.fields.store import definitions_for

MATCH_KEYS = ("phone", "email")
DEFAULT_MATCH_ON = ("phone", "email")
Status = Literal["created", "updated", "unchanged", "failed"]


@dataclass(frozen=True)
class FieldError:
    """One reason an item failed, named by its snake_case field (as a 422's details)."""

    field: str
    message: str


@dataclass(frozen=True)
class UpsertResult:
    """What became of one item: its contact after the write (``None`` if it failed)."""

    index: int
    status: Status
    contact_id: str | None
    errors: tuple[FieldError, ...]
    contact: Contact | None


@dataclass(frozen=True)
class _Failed:
    """An item that failed: the error (for the single upsert) and its field errors."""

    error: ContactSyncError
    errors: tuple[FieldError, ...]


def check_match_on(match_on: Any) -> tuple[str, ...]:
    """``match_on`` as a tuple of distinct keys, or ``ValidationFailed`` naming ``match_on``."""
    if (
        not isinstance(match_on, list | tuple)
        or not match_on
        or any(key not in MATCH_KEYS for key in match_on)
        or len(set(match_on)) != len(match_on)
    ):
        raise ValidationFailed(
            {"match_on": "Must be a non-empty list of distinct keys from phone, email"}
        )
    return tuple(match_on)


def failure(exc: ContactSyncError) -> _Failed:
    """``exc`` with its field errors, as a batch reports them."""
    if isinstance(exc, ValidationFailed):
        errors = tuple(FieldError(name, message) for name, message in exc.details.items())
    elif isinstance(exc, AmbiguousMatch):
        ids = ", ".join(exc.contact_ids)
        errors = (FieldError(exc.field, f"Ambiguous match: contacts {ids} have this {exc.field}"),)
    elif isinstance(exc, DuplicatePhone):
        ids = ", ".join(exc.contact_ids)
        errors = (FieldError(exc.field, f"Duplicate phone: contacts {ids} have this number"),)
    else:
        raise TypeError(f"not an item's failure: {exc!r}")
    return _Failed(exc, errors)


def _forbidden(name: str, message: str) -> _Failed:
    """An item naming another team's team or company: 403 alone, a failed item in a list."""
    return _Failed(ForbiddenTeam(message), (FieldError(name, message),))


def _parse(item: Any, team: Team) -> ContactCreate | _Failed:
    try:
        body = parse_create(item, region=team.default_region)
    except ValidationFailed as exc:
        return failure(exc)
    if body.team_id is not None and body.team_id != team.id:
        return _forbidden("team_id", "teamId does not match this team")
    return body


def _typed(
    conn: Connection, team: Team, parsed: list[ContactCreate | _Failed]
) -> list[ContactCreate | _Failed]:
    """Each body's custom fields as their defined types (one query for the definitions)."""
    bodies = [body for body in parsed if isinstance(body, ContactCreate)]
    keys = {key for body in bodies for key in body.custom_fields or {}}
    if not keys:
        return parsed
    definitions = definitions_for(conn, team_id=team.id, keys=keys)
    typed: list[ContactCreate | _Failed] = []
    for body in parsed:
        if isinstance(body, ContactCreate) and body.custom_fields:
            try:
                values = coerce_fields(
                    body.custom_fields,
                    definitions,
                    region=team.default_region,
                    reject_undefined=team.undefined_custom_fields == "reject",
                )
            except ValidationFailed as exc:
                typed.append(failure(exc))
                continue
            body = body.model_copy(update={"custom_fields": values})
        typed.append(body)
    return typed


def _companies_checked(
    conn: Connection, team_id: str, parsed: list[ContactCreate | _Failed]
) -> list[ContactCreate | _Failed]:
    """Bodies naming a company not found, or of another team, fail (one query for all)."""
    ids = {b.company_id for b in parsed if isinstance(b, ContactCreate) and b.company_id}
    if not ids:
        return parsed
    rows = conn.execute(
        select(companies.c.id, companies.c.team_id).where(among(conn, companies.c.id, ids))
    )
    owners = {row.id: row.team_id for row in rows}
    checked: list[ContactCreate | _Failed] = []
    for body in parsed:
        company = body.company_id if isinstance(body, ContactCreate) else None
        if company is None or owners.get(company) == team_id:
            checked.append(body)
        elif company in owners:
            checked.append(_forbidden("company_id", "Company does not belong to this team"))
        else:
            checked.append(failure(ValidationFailed({"company_id": "Company not found"})))
    return checked


@dataclass
class _Person:
    """A contact as this list leaves it so far."""

    values: dict[str, Any]
    provenance: Provenance
    read_version: int | None  # None: created by this list
    changed: set[str] = field(default_factory=set)


@dataclass
class _State:
    """The team's contacts the list touches, indexed by number and by address."""

    team: Team
    match_on: tuple[str, ...]
    source: str
    now: datetime
    suppressed: set[str]
    api_key_id: str | None
    people: dict[str, _Person] = field(default_factory=dict)
    by_phone: dict[str, set[str]] = field(default_factory=dict)
    by_email: dict[str, set[str]] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)

    def index(self, contact_id: str, values: Mapping[str, Any], *, add: bool) -> None:
        """Add (or remove) the contact under its numbers and its address."""
        keys = [(self.by_phone, values[name]) for name in PHONE_FIELDS]
        keys.append((self.by_email, (values["email"] or "").lower() or None))
        for table, key in keys:
            if key is None:
                continue
            holders = table.setdefault(key, set())
            if add:
                holders.add(contact_id)
            else:
                holders.discard(contact_id)

    def match(self, body: ContactCreate) -> str | None:
        """The id of the one contact the first matching key finds; ``AmbiguousMatch``."""
        for key in self.match_on:
            value = body.phone if key == "phone" else (body.email or "").lower() or None
            if value is None:
                continue
            found = (self.by_phone if key == "phone" else self.by_email).get(value)
            if found and len(found) > 1:
                raise AmbiguousMatch(key, sorted(found))
            if found:
                return next(iter(found))
        return None

    def check_numbers(self, numbers: Mapping[str, str], contact_id: str | None) -> None:
        """``DuplicatePhone`` when the team refuses them and another contact has one."""
        if self.team.duplicate_phones != "reject":
            return
        for name, number in numbers.items():
            others = self.by_phone.get(number, set()) - {contact_id}
            if others:
                raise DuplicatePhone(name, sorted(others))

    def create(self, body: ContactCreate) -> tuple[Status, Contact]:
        """The new contact of an item that matched nobody."""
        numbers = {name: getattr(body, name) for name in PHONE_FIELDS if getattr(body, name)}
        self.check_numbers(numbers, None)
        blocked = any(number in self.suppressed for number in numbers.values())
        row, provenance, changes = new_contact(
            body, team_id=self.team.id, source=self.source, at=self.now, suppressed=blocked
        )
        row.update(NO_CALLS)
        self.people[row["id"]] = _Person(row, Provenance(provenance), None)
        self.index(row["id"], row, add=True)
        self.history.append(self._record(row["id"], None, 1, changes))
        return "created", contact_from_values(row)

    def update(self, contact_id: str, body: ContactCreate) -> tuple[Status, Contact]:
        """An item that matched one contact, applied as a ``PATCH`` of the fields it sent."""
        person = self.people[contact_id]
        new_values, changes = diff(person.values, patch_of(body))
        if not changes:
            return "unchanged", _snapshot(person)
        checked_size(new_values)
        numbers = {name: new_values[name] for name in PHONE_FIELDS if new_values.get(name)}
        self.check_numbers(numbers, contact_id)
        self.index(contact_id, person.values, add=False)
        version = person.values["version"]
        person.values.update(new_values, version=version + 1, updated_at=self.now)
        person.provenance.update(observed_changes(changes, source=self.source, at=self.now))
        person.changed |= set(new_values)
        self.index(contact_id, person.values, add=True)
        self.history.append(self._record(contact_id, version, version + 1, changes))
        return "updated", _snapshot(person)

    def _record(
        self, contact_id: str, before: int | None, after: int, changes: list[Any]
    ) -> HistoryRecord:
        return person_record(
            contact_id=contact_id,
            team_id=self.team.id,
            version_before=before,
            version_after=after,
            at=self.now,
            api_key_id=self.api_key_id,
            source=self.source,
            changes=changes,
        )

    def apply(self, body: ContactCreate) -> tuple[Status, Contact]:
        """One item: created, updated or unchanged; a domain error if it fails."""
        contact_id = self.match(body)
        return self.create(body) if contact_id is None else self.update(contact_id, body)


def _snapshot(person: _Person) -> Contact:
    """The contact as it stands after this item (later items change ``values``, not it)."""
    return contact_from_values(person.values)


def _keys(bodies: Sequence[ContactCreate]) -> tuple[set[str], set[str]]:
    """Every number and (lower-cased) address the bodies name."""
    numbers = {getattr(b, name) for b in bodies for name in PHONE_FIELDS if getattr(b, name)}
    emails = {b.email.lower() for b in bodies if b.email}
    return numbers, emails


def _load(conn: Connection, state: _State, numbers: set[str], emails: set[str]) -> None:
    """Lock the keys, then read and lock the team's contacts that have any of them."""
    team_id = state.team.id
    lock_keys(
        conn,
        [phone_key(team_id, n) for n in numbers] + [email_key(team_id, e) for e in emails],
    )
    if not numbers and not emails:
        return
    holders = []
    if numbers:
        holders += [
            holding(conn, team_id, contacts.c.phone, numbers),
            holding(conn, team_id, contacts.c.phone_secondary, numbers),
        ]
    if emails:
        holders.append(holding(conn, team_id, func.lower(contacts.c.email), emails))
    rows = conn.execute(
        select(*CONTACT_COLUMNS, contacts.c.provenance)
        .where(contacts.c.team_id == team_id, contacts.c.id.in_(union_all(*holders)))
        .order_by(contacts.c.id)
        .with_for_update(key_share=True)
    ).all()
    for row in rows:
        values = dict(contact_from_values(row._mapping).__dict__)
        state.people[row.id] = _Person(values, provenance_from_json(row.provenance), row.version)
        state.index(row.id, values, add=True)


def _write(conn: Connection, state: _State) -> None:
    """The list's new contacts, changed contacts and history, in a statement each."""
    inserts: list[ContactInsert] = []
    updates: list[ContactUpdate] = []
    for contact_id, person in state.people.items():
        if person.read_version is None:
            values = {k: v for k, v in person.values.items() if k not in NO_CALLS}
            inserts.append(ContactInsert(values, person.provenance))
        elif person.changed:
            changed = {name: person.values[name] for name in sorted(person.changed)}
            updates.append(
                ContactUpdate(
                    contact_id,
                    person.read_version,
                    person.values["version"],
                    changed,
                    person.provenance,
                    state.now,
                )
            )
    contact_writer.insert_contacts(conn, inserts)
    contact_writer.update_contacts(conn, updates)
    contact_writer.record_history(conn, state.history)


def _prepared(conn: Connection, team: Team, items: Sequence[Any]) -> list[ContactCreate | _Failed]:
    parsed = [_parse(item, team) for item in items]
    return _companies_checked(conn, team.id, _typed(conn, team, parsed))


def upsert_outcomes(
    conn: Connection,
    *,
    team_id: str,
    items: Sequence[Any],
    match_on: Sequence[str],
    source: str,
    now: datetime,
    api_key_id: str | None = None,
) -> list[tuple[Status, Contact | None, _Failed | None]]:
    """Each item's status, contact and failure, in item order (see ``upsert_contacts``)."""
    team = get_team(conn, team_id=team_id)
    keys = check_match_on(match_on)
    prepared = _prepared(conn, team, items)
    bodies = [body for body in prepared if isinstance(body, ContactCreate)]
    numbers, emails = _keys(bodies)
    suppressed = {phone for _, phone in suppressed_numbers(conn, [(team_id, n) for n in numbers])}
    state = _State(team, keys, source, now, suppressed, api_key_id)
    _load(conn, state, numbers, emails)
    outcomes: list[tuple[Status, Contact | None, _Failed | None]] = []
    for body in prepared:
        if isinstance(body, _Failed):
            outcomes.append(("failed", None, body))
            continue
        try:
            status, contact = state.apply(body)
        except (Conflict, ValidationFailed) as exc:
            outcomes.append(("failed", None, failure(exc)))
            continue
        outcomes.append((status, contact, None))
    _write(conn, state)
    return outcomes


def upsert_contacts(
    conn: Connection,
    *,
    team_id: str,
    items: Sequence[Mapping[str, Any]],
    match_on: Sequence[str],
    source: str,
    now: datetime,
    api_key_id: str | None = None,
) -> list[UpsertResult]:
    """Upsert each item (an API body: camelCase or snake_case) in order, in the caller's
    transaction; one result per item, in item order.

    ``source`` is the provenance of what the items set: ``api`` or ``import``
    (both people's data, which calls do not overwrite). A failed item (invalid,
    ambiguous, a duplicate number the team refuses, a company of another team)
    is reported and written nowhere; the others apply. ``match_on`` must be a
    non-empty list from ``phone``, ``email`` (``ValidationFailed`` otherwise);
    ``TeamNotFound`` for no team. ``api_key_id``: the key an API write came
    with, for the history records.
    """
    results = []
    outcomes = upsert_outcomes(
        conn,
        team_id=team_id,
        items=items,
        match_on=match_on,
        source=source,
        now=now,
        api_key_id=api_key_id,
    )
    for index, (status, contact, failed) in enumerate(outcomes):
        results.append(
            UpsertResult(
                index=index,
                status=status,
                contact_id=None if contact is None else contact.id,
                errors=() if failed is None else failed.errors,
                contact=contact,
            )
        )
    return results


def upsert_contact(
    conn: Connection,
    *,
    team_id: str,
    item: Any,
    match_on: Sequence[str],
    source: str,
    now: datetime,
    api_key_id: str | None = None,
) -> tuple[Status, Contact]:
    """One upsert: ``created`` or ``updated``/``unchanged`` and the contact; a failure raises
    its error (``ValidationFailed``, ``ForbiddenTeam``, ``AmbiguousMatch``, ``DuplicatePhone``)."""
    [(status, contact, failed)] = upsert_outcomes(
        conn,
        team_id=team_id,
        items=[item],
        match_on=match_on,
        source=source,
        now=now,
        api_key_id=api_key_id,
    )
    if failed is not None:
        raise failed.error
    assert contact is not None
    return status, contact
