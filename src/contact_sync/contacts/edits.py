"""People's writes as rows, observations, changes and history records.

Shared by the single writes of ``contacts.store`` (create, patch) and the
set-based upsert of ``contacts.upsert``, so that a contact created or
changed by either is built the same way. No statements here: the callers
read and lock, and hand what this builds to ``contacts.writer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from contact_sync.contacts.model import ContactCreate, check_custom_fields_size
from contact_sync.contacts.records import Change, Observation
from contact_sync.contacts.suppression import SUPPRESSED
from contact_sync.contacts.writer import HistoryRecord
from contact_sync.errors import ValidationFailed
from contact_sync.ids import new_id

# Filled by the calls ledger, never by a person's write: a new contact has no calls yet.
NO_CALLS: Mapping[str, Any] = {"call_count": 0, "last_called_at": None, "last_call_outcome": None}


def observed(fields: Mapping[str, Any], *, source: str, at: datetime) -> dict[str, Observation]:
    """A person's observation of each field set (each custom field on its own)."""
    seen = Observation(source, at.isoformat())
    keys = [name for name in fields if name != "custom_fields"]
    keys += [f"custom_fields.{key}" for key in fields.get("custom_fields") or {}]
    return dict.fromkeys(keys, seen)


def observed_changes(changes: list[Change], *, source: str, at: datetime) -> dict[str, Observation]:
    """The observation of each field a patch changed."""
    seen = Observation(source, at.isoformat())
    return {change.field: seen for change in changes}


def person_record(
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


def new_contact(
    body: ContactCreate, *, team_id: str, source: str, at: datetime, suppressed: bool
) -> tuple[dict[str, Any], dict[str, Observation], list[Change]]:
    """A validated create as the new row (version 1), its observations and its changes.

    ``suppressed``: one of its numbers is on the team's suppression list.
    """
    fields = body.model_dump(exclude={"team_id"})
    fields["lead_status"] = fields["lead_status"] or "new"
    fields["custom_fields"] = fields["custom_fields"] or {}
    fields["tags"] = fields["tags"] or []
    # Only what the person sent gets provenance: a defaulted status or flag
    # is no observation, and must not outrank a call that happened earlier.
    set_fields = {
        k: v for k, v in fields.items() if k in body.model_fields_set and v not in (None, {}, [])
    }
    provenance = observed(set_fields, source=source, at=at)
    if suppressed:
        # A number of an erased do-not-call contact: do-not-call, whatever the
        # body says; a person may clear it later with a PATCH, on the record.
        fields["do_not_call"] = set_fields["do_not_call"] = True
        provenance["do_not_call"] = Observation("suppression", at.isoformat())
    row = {**fields, "id": new_id(), "team_id": team_id, "version": 1}
    row.update(created_at=at, updated_at=at)
    reason = {"do_not_call": SUPPRESSED} if suppressed else {}
    changes = [Change(name, None, value, reason.get(name)) for name, value in set_fields.items()]
    return row, provenance, changes


def patch_of(body: ContactCreate) -> dict[str, Any]:
    """A create body's fields as a patch's: only those sent, ``null`` clearing (upsert)."""
    values = {name: getattr(body, name) for name in body.model_fields_set - {"team_id"}}
    for non_null, empty in (("custom_fields", {}), ("tags", [])):
        if non_null in values and values[non_null] is None:
            values[non_null] = empty
    if "lead_status" in values and values["lead_status"] is None:
        values["lead_status"] = "new"
    return values


def merge_patch(
    current: Mapping[str, Any], patch: Mapping[str, Any]
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


def diff(
    current: Mapping[Any, Any], updates: Mapping[str, Any]
) -> tuple[dict[str, Any], list[Change]]:
    """The columns that really change and the history entries describing them."""
    new_values: dict[str, Any] = {}
    changes: list[Change] = []
    for name, value in updates.items():
        if name == "custom_fields":
            stored = dict(current["custom_fields"])
            merged, custom = merge_patch(stored, value)
            if merged != stored:
                new_values["custom_fields"] = merged
            changes += custom
        elif current[name] != value:
            new_values[name] = value
            changes.append(Change(name, current[name], value))
    return new_values, changes


def checked_size(new_values: Mapping[str, Any]) -> None:
    """Each patch is checked alone; the keys it adds to the stored ones must fit too."""
    if "custom_fields" in new_values:
        try:
            check_custom_fields_size(new_values["custom_fields"])
        except ValueError as exc:
            raise ValidationFailed({"custom_fields": str(exc)}) from exc
