"""Replaying dead letters: the one use case the CLI and the HTTP API both call.

The letter is locked and read again, refused if it was erased or discarded,
and its payload goes through the same apply path as a delivery, in one
transaction with the letter's update: closed when the event now goes
through, else parked again with the new reason. Either way the replay is
one entry of the letter's ``attempt_log`` (with who replayed it), so the
reason it was first parked for is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from contact_sync.calls.apply import Outcome, apply_payloads
from contact_sync.errors import ContactSyncError, NotFound
from contact_sync.ops.dead_letters import (
    DeadLetter,
    DeadLetterLine,
    DeadLetterNotFound,
    get_dead_letter,
    list_dead_letter_lines,
    list_dead_letters,
    log_entry,
    log_replay,
    mark_replayed,
    take_for_replay,
)


@dataclass(frozen=True)
class Replay:
    """What a replay did: the event's outcome, and the letter afterwards."""

    outcome: Outcome
    letter: DeadLetter


def replay_letter(
    conn: Connection,
    *,
    dead_letter_id: str,
    team_id: str | None,
    by: str,
    now: datetime,
    min_confidence: float,
) -> Replay:
    """Apply the letter's event again, in the caller's transaction.

    ``team_id`` None reaches every letter (operators); a team reaches its own
    only (``DeadLetterNotFound`` otherwise). ``ErasedLetter``/``DiscardedLetter``
    when it must not be applied. ``by``: the API key's id, or ``cli:<user>``.
    """
    taken = take_for_replay(conn, dead_letter_id=dead_letter_id, team_id=team_id)
    if taken is None:
        raise DeadLetterNotFound(dead_letter_id)
    [outcome] = apply_payloads(
        conn,
        [taken.payload],
        min_confidence=min_confidence,
        now=now,
        dead_letter_id=taken.id,
    )
    if outcome.outcome != "dead_lettered":
        mark_replayed(conn, dead_letter_id=taken.id, now=now)
    entry = log_entry(
        at=now,
        via="replay",
        outcome=outcome.outcome,
        reason=outcome.reason,
        message=outcome.message,
        by=by,
    )
    log_replay(conn, taken=taken, entry=entry)
    after = get_dead_letter(conn, dead_letter_id=taken.id)
    assert after is not None  # locked by this transaction since it was taken
    return Replay(outcome, after)


class NoLetterToReplay(NotFound):
    """What the operator named (an id, an event id) matches no dead letter."""


class EventInSeveralTeams(ContactSyncError):
    """An event id with dead letters in several teams: which one is meant is unknown."""


@dataclass(frozen=True)
class Selection:
    """The letters to replay, one unit of work each, and the erased ones left out."""

    letters: list[DeadLetter | DeadLetterLine]
    erased: int = 0


def select_for_replay(
    conn: Connection,
    *,
    dead_letter_id: str | None = None,
    event_id: str | None = None,
    team_id: str | None = None,
) -> Selection:
    """The letters an operator's replay names: one by id, one by event id, else every open one.

    Every open one leaves the erased out (counted); a letter named alone is
    refused under its lock instead (``replay_letter``: ``ErasedLetter``).
    Reads ids and states only for the many: each payload is read when its
    letter is taken.
    """
    if dead_letter_id is None and event_id is None:
        lines = list_dead_letter_lines(conn, include_replayed=False, team_id=team_id)
        kept: list[DeadLetter | DeadLetterLine] = [x for x in lines if x.erased_at is None]
        return Selection(kept, erased=len(lines) - len(kept))
    where = f" in team {team_id}" if team_id else ""
    wanted = dead_letter_id or _by_event_id(conn, str(event_id), team_id)
    found = get_dead_letter(conn, dead_letter_id=wanted, team_id=team_id)
    if found is None:
        raise NoLetterToReplay(f"no dead letter {wanted}{where}")
    return Selection([found])


def _by_event_id(conn: Connection, event_id: str, team_id: str | None) -> str:
    """The letter to replay for an event id: its team's open one, else its newest."""
    letters = list_dead_letters(conn, team_id=team_id, event_id=event_id)
    if not letters:
        where = f" in team {team_id}" if team_id else ""
        raise NoLetterToReplay(f"no dead letter of event {event_id}{where}")
    teams = {letter.team_id for letter in letters}
    if len(teams) > 1:
        raise EventInSeveralTeams(f"event id {event_id} has dead letters in {len(teams)} teams")
    return next((letter for letter in letters if letter.is_open), letters[0]).id
