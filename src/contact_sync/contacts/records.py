"""What a contact write records: observations (provenance), changes and skipped values.

Small frozen values, built by the pure merge and by people's writes, and
turned into the JSON the database stores here and nowhere else (only the
contact writer calls the ``*_json`` functions), so the stored shape is
defined once. The JSON keeps the key order and the keys the service has
always written: an observation of a call names its event and call, a
person's or the suppression list's names only its source and time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

Json = dict[str, Any]
T = TypeVar("T")


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
    """An observation as stored (the inverse of ``observation_json``)."""
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


class Provenance(Mapping[str, Observation]):
    """Each field's observation: the stored JSON as read, decoded only where it is looked at.

    The event apply reads every contact's whole provenance, but one call
    consults a few of its fields: decoding every entry on read (and encoding
    every one again on write) was a tenth of the apply's CPU after the
    restructure of issue 13. So the stored entries stay the JSON the database
    gave (never mutated, written back as they were), each is decoded on first
    use (memoised; the memo is shared by copies, as the stored JSON does not
    change), and only the observations set since the read are typed values,
    encoded when written. Entries are set or replaced, never removed.
    """

    __slots__ = ("_decoded", "_set", "_stored")

    def __init__(
        self,
        observed: Mapping[str, Observation] | None = None,
        *,
        stored: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._stored: Mapping[str, Mapping[str, Any]] = stored if stored is not None else {}
        self._decoded: dict[str, Observation] = {}
        self._set: dict[str, Observation] = dict(observed) if observed else {}

    def __getitem__(self, name: str) -> Observation:
        seen = self._set.get(name)
        return self._read(name) if seen is None else seen

    @overload
    def get(self, name: str, /) -> Observation | None: ...
    @overload
    def get(self, name: str, /, default: Observation | T) -> Observation | T: ...
    def get(self, name: str, /, default: Observation | T | None = None) -> Observation | T | None:
        """``self[name]`` or ``default``, without raising for a missing name (the merge's
        usual question)."""
        seen = self._set.get(name)
        if seen is not None:
            return seen
        return self._read(name) if name in self._stored else default

    def __contains__(self, name: object) -> bool:
        return name in self._set or name in self._stored

    def __setitem__(self, name: str, seen: Observation) -> None:
        self._set[name] = seen

    def update(self, observed: Mapping[str, Observation]) -> None:
        """Set several observations at once."""
        self._set.update(observed)

    def __iter__(self) -> Iterator[str]:
        yield from self._stored
        yield from (name for name in self._set if name not in self._stored)

    def __len__(self) -> int:
        return len(self._stored) + sum(1 for name in self._set if name not in self._stored)

    def __repr__(self) -> str:
        return f"Provenance({dict(self.items())!r})"

    def copy(self) -> Provenance:
        """An independent copy (observations are immutable, so they are shared)."""
        twin = Provenance(self._set, stored=self._stored)
        twin._decoded = self._decoded
        return twin

    def changed(self) -> bool:
        """Whether any observation differs from the stored one (set anew or replaced)."""
        return any(
            name not in self._stored or seen != self._read(name) for name, seen in self._set.items()
        )

    def _read(self, name: str) -> Observation:
        seen = self._decoded.get(name)
        if seen is None:
            seen = self._decoded[name] = observation_from_json(self._stored[name])
        return seen

    def as_json(self) -> dict[str, Mapping[str, Any]]:
        """The stored form: entries as read stay as read (same place, same text), observations
        set since are encoded (a new field's goes last, as in a dict)."""
        entries = dict(self._stored)  # the entries themselves are shared, never mutated
        encoded: dict[int, Json] = {}  # a call's one observation is set on many fields
        for name, seen in self._set.items():
            if seen is not self._decoded.get(name):  # not the very observation read
                entry = encoded.get(id(seen))
                if entry is None:
                    entry = encoded[id(seen)] = observation_json(seen)
                entries[name] = entry
        return entries


def provenance_json(provenance: Mapping[str, Observation]) -> dict[str, Mapping[str, Any]]:
    """The stored ``provenance`` column: each field's observation."""
    if isinstance(provenance, Provenance):
        return provenance.as_json()
    return {name: observation_json(seen) for name, seen in provenance.items()}


def provenance_from_json(stored: Mapping[str, Mapping[str, Any]]) -> Provenance:
    """A stored ``provenance`` column as observations (decoded as they are looked at)."""
    return Provenance(stored=stored)


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
