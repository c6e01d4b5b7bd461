"""Replaying a dead letter: the one path the CLI and the HTTP API both take.

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

from contact_sync.apply import Outcome, apply_payloads
from contact_sync.dead_letters import (
    DeadLetter,
    DeadLetterNotFound,
    get_dead_letter,
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


def replay(
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
