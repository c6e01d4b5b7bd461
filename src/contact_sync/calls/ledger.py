"""The calls ledger's rules (docs/design.md §11): a row from an event, and which row is newer.

Pure: the SQL is in ``calls/ledger_store.py``. One row per ``(team_id,
call_id)``: a later event of the same call (a re-analysis) replaces the
whole row when it is newer under §4.1 (``occurred_at``, then the larger
``event_id``), and otherwise leaves it as it was. Newer is a total order over
a call's events, so keeping the newest of a batch and then comparing it with
the stored row ends where applying the events one by one would, in any order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contact_sync.calls.events import CallCompleted, CallDirection
from contact_sync.contacts.phones import normalise_phone

DEFAULT_DIRECTION: CallDirection = "outbound"

CallKey = tuple[str, str]
"""``(team_id, call_id)``: what identifies a call."""


@dataclass(frozen=True)
class CallRecord:
    """A ledger row's values but its id and ``recorded_at`` (the store assigns those)."""

    team_id: str
    contact_id: str
    call_id: str
    event_id: str
    campaign_id: str | None
    direction: CallDirection
    outcome: str
    duration_seconds: int | None
    started_at: datetime | None
    ended_at: datetime
    phone: str | None
    summary: str | None

    @property
    def key(self) -> CallKey:
        """The call this row is about."""
        return (self.team_id, self.call_id)

    @property
    def order(self) -> tuple[datetime, str]:
        """Its place under §4.1: when the call ended, then the event id."""
        return (self.ended_at, self.event_id)

    def values(self) -> dict[str, Any]:
        """The row's columns by name."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def call_phone(event: CallCompleted, region: str, primary: str | None) -> str | None:
    """The call's number: the event's, read in the team's region, else the contact's primary.

    An event that named its contact by id may carry a number that cannot be read:
    the event still applies (resolution did not need it), the row takes the primary.
    """
    if event.phone is not None:
        try:
            return normalise_phone(event.phone, region)
        except ValueError:
            pass
    return primary


def _started_at(event: CallCompleted) -> datetime | None:
    if event.started_at is not None:
        return event.started_at.astimezone(UTC)
    if event.duration_seconds is not None:
        return event.occurred_at.astimezone(UTC) - timedelta(seconds=event.duration_seconds)
    return None


def record_of(event: CallCompleted, contact_id: str, phone: str | None) -> CallRecord:
    """The row an applied event writes, for the contact it applied to."""
    extraction = event.extraction
    return CallRecord(
        team_id=event.team_id,
        contact_id=contact_id,
        call_id=event.call_id,
        event_id=event.event_id,
        campaign_id=event.campaign_id,
        direction=event.direction or DEFAULT_DIRECTION,
        outcome=event.outcome,
        duration_seconds=event.duration_seconds,
        started_at=_started_at(event),
        ended_at=event.occurred_at.astimezone(UTC),
        phone=phone,
        summary=extraction.summary if extraction else None,
    )


def is_newer(record: CallRecord, than: tuple[datetime, str] | None) -> bool:
    """Whether ``record`` replaces a stored row of that order (``None``: there is none)."""
    return than is None or record.order > than


def newest_per_call(records: Iterable[CallRecord]) -> list[CallRecord]:
    """Of each call's records, the newest: what applying them one by one leaves."""
    newest: dict[CallKey, CallRecord] = {}
    for record in records:
        kept = newest.get(record.key)
        if is_newer(record, kept.order if kept else None):
            newest[record.key] = record
    return list(newest.values())
