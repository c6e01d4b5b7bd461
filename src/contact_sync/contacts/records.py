"""What a contact write records: observations (provenance), changes and skipped values.

Small frozen values, built by the pure merge and by people's writes, and
turned into the JSON the database stores here and nowhere else (only the
contact writer calls the ``*_json`` functions), so the stored shape is
defined once. The JSON keeps the key order and the keys the service has
always written: an observation of a call names its event and call, a
person's or the suppression list's names only its source and time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Observation:
    """Where the current value of one field came from, and when it was observed.

    ``observed_at`` stays the ISO text as recorded: the merge compares it
    normalised, and what was stored is written back unchanged. ``implicit``
    marks the ``new`` → ``contacted`` move of a completed call, and
    ``replaces`` the observation that move displaced (an extracted status is
    compared with that one).
    """

    source: str
    observed_at: str
    event_id: str | None = None
    call_id: str | None = None
    confidence: float | None = None
    evidence: str | None = None
    implicit: bool = False
    replaces: Observation | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One field's value before and after a write; ``reason`` says why when it is not the
    writer's own value (a do-not-call forced by the suppression list); ``raw`` is the value
    as received when coercion to the field's type changed it (``"$7.5k"`` stored as 7500)."""

    field: str
    old: Any
    new: Any
    reason: str | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class Skip:
    """A value a call carried that the merge declined, and why."""

    field: str
    value: Any
    reason: str


def observation_json(seen: Observation) -> Json:
    """The stored form of one observation."""
    entry: Json = {"source": seen.source, "observed_at": seen.observed_at}
    if seen.source == "call":
        entry["event_id"] = seen.event_id
        entry["call_id"] = seen.call_id
    if seen.confidence is not None:
        entry["confidence"] = seen.confidence
    if seen.evidence is not None:
        entry["evidence"] = seen.evidence
    if seen.implicit:
        entry["implicit"] = True
        entry["replaces"] = None if seen.replaces is None else observation_json(seen.replaces)
    return entry


def observation_from_json(entry: Mapping[str, Any]) -> Observation:
    """An observation as stored (the inverse of ``observation_json``).

    Every read of a contact in the event apply reads all its observations,
    and the same ones recur from batch to batch (one call observes many
    fields): they are interned, which halves the cost of reading a row's.
    The key holds the confidence's type, so that a stored ``1`` never comes
    back as ``1.0``. An implicit one holds a mapping, so is never interned.
    """
    if "replaces" in entry:
        return _parse(entry)
    return _interned(tuple(entry.items()), type(entry.get("confidence")).__name__)


@lru_cache(maxsize=65536)
def _interned(items: tuple[tuple[str, Any], ...], _confidence: str) -> Observation:
    return _parse(dict(items))


def _parse(entry: Mapping[str, Any]) -> Observation:
    replaces = entry.get("replaces")
    return Observation(
        source=entry["source"],
        observed_at=entry["observed_at"],
        event_id=entry.get("event_id"),
        call_id=entry.get("call_id"),
        confidence=entry.get("confidence"),
        evidence=entry.get("evidence"),
        implicit=bool(entry.get("implicit", False)),
        replaces=None if replaces is None else observation_from_json(replaces),
    )


def provenance_json(provenance: Mapping[str, Observation]) -> dict[str, Json]:
    """The stored ``provenance`` column: each field's observation."""
    return {name: observation_json(seen) for name, seen in provenance.items()}


def provenance_from_json(stored: Mapping[str, Mapping[str, Any]]) -> dict[str, Observation]:
    """A stored ``provenance`` column as observations."""
    return {name: observation_from_json(entry) for name, entry in stored.items()}


def change_json(change: Change) -> Json:
    """The stored form of one change of a history record."""
    entry: Json = {"field": change.field, "old": change.old, "new": change.new}
    if change.reason is not None:
        entry["reason"] = change.reason
    if change.raw is not None:
        entry["raw"] = change.raw
    return entry


def skip_json(skip: Skip) -> Json:
    """The stored form of one skipped value of a history record."""
    return {"field": skip.field, "value": skip.value, "reason": skip.reason}
