"""Dead letters: events parked with their reason and raw payload, never dropped.

A redelivery of the same bad event (the same event id from the same team)
bumps ``attempts`` on its open dead letter instead of adding another, so
the table stays a list of problems.

Nothing about a letter is overwritten without a trace: its ``attempt_log``
keeps each delivery and each replay (when, which, its outcome, reason and
message, and who replayed it), so a replay that fails for a new reason
still shows the reason the event was parked for. The log keeps the first
entry and the latest ``LOG_LIMIT - 1``; ``attempts`` counts them all. A
letter is closed when a replay goes through (``replayed_at``) or when a
person discards it (``discarded_at``, ``discarded_by``); it is never deleted.

Deleting a contact erases the team's letters that name it (``erase_naming``):
the payload, which holds what the call heard about the person, becomes a
tombstone, and such a letter is never replayed (README, "Erasure").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import phonenumbers
from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)

from contact_sync.calls.events import EventOutcome, Reason, event_id_of, team_id_of
from contact_sync.contacts.phones import normalise_phone
from contact_sync.db.tables import dead_letters
from contact_sync.errors import ContactSyncError, NotFound
from contact_sync.ids import new_id
from contact_sync.storable import has_unstorable

ERASED_MESSAGE = "erased: the contact this event named was deleted"
LOG_LIMIT = 50
_ERASE_PAGE = 500
# The most of a payload a dead letter keeps: its JSON text, in bytes (README, "Dead letters").
MAX_PAYLOAD_BYTES = 256 * 1024

Via = Literal["delivery", "replay"]


def log_entry(
    *,
    at: datetime,
    via: Via,
    outcome: EventOutcome,
    reason: Reason | None,
    message: str | None,
    by: str | None = None,
) -> dict[str, Any]:
    """One entry of a letter's ``attempt_log``: a delivery (``by`` is null) or a replay."""
    return {
        "at": at.isoformat(),
        "via": via,
        "outcome": outcome,
        "reason": reason,
        "message": message[:2000] if message is not None else None,
        "by": by,
    }


def _appended(log: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """``log`` with ``entry``: the first entry (the original problem) and the latest kept."""
    longer = [*log, entry]
    return longer if len(longer) <= LOG_LIMIT else [longer[0], *longer[-(LOG_LIMIT - 1) :]]


@dataclass(frozen=True)
class DeadLetter:
    """A parked event as ops see it."""

    id: str
    event_id: str | None
    team_id: str | None
    reason: str
    message: str
    payload: Any
    first_seen_at: datetime
    last_seen_at: datetime
    attempts: int
    replayed_at: datetime | None
    erased_at: datetime | None = None
    discarded_at: datetime | None = None
    discarded_by: str | None = None
    attempt_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """Neither replayed successfully nor discarded (an erased letter can only be discarded)."""
        return self.replayed_at is None and self.discarded_at is None

    @property
    def state(self) -> str:
        """``discarded``, ``replayed``, ``erased`` or ``open``, for people."""
        if self.discarded_at is not None:
            return "discarded"
        if self.replayed_at is not None:
            return "replayed"
        return "erased" if self.erased_at is not None else "open"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = dict(self.__dict__)
        for key in ("first_seen_at", "last_seen_at", "replayed_at", "erased_at", "discarded_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        data["open"] = self.is_open
        return data


def _from_row(row: Row[Any]) -> DeadLetter:
    """The letter of a row; a letter parked before the log existed shows its one delivery."""
    data = dict(row._mapping)
    if not data.get("attempt_log"):
        data["attempt_log"] = [
            log_entry(
                at=data["last_seen_at"],
                via="delivery",
                outcome="dead_lettered",
                reason=data["reason"],
                message=data["message"],
            )
        ]
    return DeadLetter(**data)


class DeadLetterNotFound(NotFound):
    """No dead letter with that id (within the caller's team)."""


class ClosedLetter(ContactSyncError):
    """A dead letter that cannot take this action (erased, discarded, replayed)."""

    def __init__(self, message: str, letter: DeadLetter) -> None:
        super().__init__(message)
        self.letter = letter


class ErasedLetter(ClosedLetter):
    """A dead letter whose contact was deleted: its event is gone and cannot be replayed."""

    def __init__(self, letter: DeadLetter) -> None:
        erased = letter.erased_at.date().isoformat() if letter.erased_at else "?"
        super().__init__(
            f"dead letter {letter.id} was erased on {erased} (its contact was deleted); "
            "it cannot be replayed",
            letter,
        )


class DiscardedLetter(ClosedLetter):
    """A dead letter a person discarded: it is closed, and replaying it is refused."""

    def __init__(self, letter: DeadLetter) -> None:
        when = letter.discarded_at.isoformat() if letter.discarded_at else "?"
        super().__init__(
            f"dead letter {letter.id} was discarded at {when} by {letter.discarded_by}; "
            "it cannot be replayed",
            letter,
        )


class ReplayedLetter(ClosedLetter):
    """A dead letter whose event went through: there is nothing left to discard."""

    def __init__(self, letter: DeadLetter) -> None:
        when = letter.replayed_at.isoformat() if letter.replayed_at else "?"
        super().__init__(
            f"dead letter {letter.id} was replayed successfully at {when}; it cannot be discarded",
            letter,
        )


def check_replayable(letter: DeadLetter) -> None:
    """Raise ``ErasedLetter`` or ``DiscardedLetter`` for a letter that must not be applied."""
    if letter.erased_at is not None:
        raise ErasedLetter(letter)
    if letter.discarded_at is not None:
        raise DiscardedLetter(letter)


def _in_team(team_id: str | None) -> ColumnElement[bool]:
    """The letters of ``team_id``; every letter (operators) when it is None."""
    if team_id is None:
        return true()
    return dead_letters.c.team_id == team_id


def _locked(conn: Connection, dead_letter_id: str, team_id: str | None) -> DeadLetter | None:
    if "\x00" in dead_letter_id:  # PostgreSQL text cannot hold it; no id contains it
        return None
    row = conn.execute(
        select(dead_letters)
        .where(dead_letters.c.id == dead_letter_id, _in_team(team_id))
        .with_for_update()
    ).one_or_none()
    return _from_row(row) if row is not None else None


def take_for_replay(
    conn: Connection, *, dead_letter_id: str, team_id: str | None = None
) -> DeadLetter | None:
    """The letter, locked for the replay's transaction; ``ErasedLetter`` if it was erased,
    ``DiscardedLetter`` if a person discarded it; None if ``team_id`` has no such letter.

    Read again under the lock: a delete that erased it since it was listed
    has committed (or waits for this transaction), so an erased payload is
    never replayed from a copy read before.
    """
    letter = _locked(conn, dead_letter_id, team_id)
    if letter is not None:
        check_replayable(letter)
    return letter


def log_replay(conn: Connection, *, taken: DeadLetter, entry: dict[str, Any]) -> None:
    """Add a replay's entry to the log of ``taken`` (the letter as ``take_for_replay`` read
    it: still locked, and its log, seeded for an old letter, untouched by the replay)."""
    conn.execute(
        update(dead_letters)
        .where(dead_letters.c.id == taken.id)
        .values(attempt_log=_appended(taken.attempt_log, entry))
    )


def discard(
    conn: Connection, *, dead_letter_id: str, team_id: str | None, by: str, now: datetime
) -> DeadLetter:
    """Close a letter without applying it, saying who and when; it is kept, never deleted.

    Discarding a discarded letter changes nothing (the first who and when stay),
    so a client may retry; a letter replayed successfully is ``ReplayedLetter``.
    ``DeadLetterNotFound`` when ``team_id`` (None: any) has no such letter.
    """
    letter = _locked(conn, dead_letter_id, team_id)
    if letter is None:
        raise DeadLetterNotFound(dead_letter_id)
    if letter.discarded_at is not None:
        return letter
    if letter.replayed_at is not None:
        raise ReplayedLetter(letter)
    conn.execute(
        update(dead_letters)
        .where(dead_letters.c.id == letter.id)
        .values(discarded_at=now, discarded_by=by[:100])
    )
    return _with(letter, discarded_at=now, discarded_by=by[:100])


def _with(letter: DeadLetter, **changes: Any) -> DeadLetter:
    return DeadLetter(**{**letter.__dict__, **changes})


def storable(payload: Any) -> Any:
    """The payload as a JSON column can hold it, and at most ``MAX_PAYLOAD_BYTES`` of it.

    PostgreSQL's JSONB cannot hold U+0000, a lone surrogate or a non-finite
    number anywhere; such a
    payload is kept whole as its (ASCII-escaped) JSON text under ``raw_json``
    rather than altered. A payload whose JSON text is larger than the cap
    is kept as the start of that text: ``{"truncated": true,
    "original_bytes": N, "prefix": "..."}``, so that a publisher's 100 MB
    message is a 256 KiB row, not a 100 MB one every listing reads.
    """
    if has_unstorable(payload, numbers=True):
        payload = {"raw_json": json.dumps(payload)}
    return _capped(payload)


def _capped(payload: Any) -> Any:
    """``payload``, or its truncation if its JSON text exceeds ``MAX_PAYLOAD_BYTES``.

    Sizes are of the compact, ASCII-escaped JSON text (what ``json.dumps``
    writes): the prefix is ASCII, so it is valid text wherever it is cut,
    and the stored payload, escaped once more as a string, stays within
    the cap.
    """
    # default=str: kombu's reader may have made dates of a publisher's type markers.
    text_ = json.dumps(payload, separators=(",", ":"), default=str)
    if len(text_) <= MAX_PAYLOAD_BYTES:
        return payload
    budget = MAX_PAYLOAD_BYTES - 100  # the keys and the size around the prefix
    length = budget
    while True:
        prefix = text_[:length]
        escaped = len(json.dumps(prefix))
        if escaped <= budget:
            return {"truncated": True, "original_bytes": len(text_), "prefix": prefix}
        length = length * budget // escaped - 1


def record(
    conn: Connection,
    *,
    payload: Any,
    reason: Reason,
    message: str,
    event_id: str | None,
    team_id: str | None,
    now: datetime,
    dead_letter_id: str | None = None,
) -> str:
    """Park ``payload``; returns the dead letter's id.

    ``dead_letter_id`` (a replay) or an open dead letter of the same event
    (the same event id from the same team, or both without a team) is updated
    rather than duplicated. An erased or discarded letter is never written again:
    a later delivery of its event is new data and gets a letter of its own. A
    delivery adds an entry to the letter's ``attempt_log``; a replay's entry is
    written by its caller (``log_replay``), who knows who replayed it.
    """
    problem = _Problem(storable(payload), reason, message[:2000], team_id, now)
    delivery = log_entry(
        at=now, via="delivery", outcome="dead_lettered", reason=reason, message=message
    )
    if dead_letter_id is not None:
        if _park_again(conn, dead_letter_id, problem, None):
            return dead_letter_id
    elif event_id is not None:
        existing = _open_letter_of(conn, event_id, team_id)
        if existing is not None and _park_again(conn, existing, problem, delivery):
            return existing
    return _park_new(conn, problem, event_id, delivery)


@dataclass(frozen=True)
class _Problem:
    """What a delivery or a replay writes into a letter: the payload as stored, and why."""

    payload: Any
    reason: Reason
    message: str
    team_id: str | None
    now: datetime


def _open_letter_of(conn: Connection, event_id: str, team_id: str | None) -> str | None:
    """The open letter of the event (its team and its id, as in the inbox), if there is one."""
    if conn.dialect.name == "postgresql":
        # Two deliveries of the same bad event, parked at the same moment by two
        # workers, would both find no open letter and add one each: take turns.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"dead_letter:{team_id or ''}:{event_id}"},
        )
    # Another team's event that carries the id is another event.
    team: ColumnElement[bool] = (
        dead_letters.c.team_id.is_(None) if team_id is None else dead_letters.c.team_id == team_id
    )
    found: str | None = conn.execute(
        select(dead_letters.c.id)
        .where(
            dead_letters.c.event_id == event_id,
            dead_letters.c.replayed_at.is_(None),
            dead_letters.c.erased_at.is_(None),
            dead_letters.c.discarded_at.is_(None),
            team,
        )
        .limit(1)
    ).scalar_one_or_none()
    return found


def _park_again(
    conn: Connection, letter_id: str, problem: _Problem, delivery: dict[str, Any] | None
) -> bool:
    """Write ``problem`` into the letter (and log ``delivery``); False if it is gone or erased."""
    current = _locked(conn, letter_id, None)
    if current is None or current.erased_at is not None:
        return False
    logged = {} if delivery is None else {"attempt_log": _appended(current.attempt_log, delivery)}
    conn.execute(
        update(dead_letters)
        .where(dead_letters.c.id == letter_id)
        .values(
            team_id=func.coalesce(dead_letters.c.team_id, problem.team_id),
            reason=problem.reason,
            message=problem.message,
            payload=problem.payload,
            last_seen_at=problem.now,
            attempts=dead_letters.c.attempts + 1,
            replayed_at=None,
            **logged,
        )
    )
    return True


def _park_new(
    conn: Connection, problem: _Problem, event_id: str | None, delivery: dict[str, Any]
) -> str:
    """A new letter for ``problem``; returns its id."""
    new = new_id()
    conn.execute(
        insert(dead_letters).values(
            id=new,
            event_id=event_id,
            team_id=problem.team_id,
            reason=problem.reason,
            message=problem.message,
            payload=problem.payload,
            first_seen_at=problem.now,
            last_seen_at=problem.now,
            attempts=1,
            replayed_at=None,
            attempt_log=[delivery],
        )
    )
    return new


def park(
    conn: Connection,
    *,
    payloads: Sequence[Any],
    reason: Reason,
    message: str,
    now: datetime,
    events: Sequence[Any] | None = None,
    dead_letter_id: str | None = None,
) -> list[str]:
    """Dead-letter each payload in the caller's transaction; returns the letters' ids.

    The one writer of dead letters: the apply path, the tasks and the consumer
    all park through it. A letter is keyed by the event its payload carries:
    the payload itself, or ``events[i]`` when the payload wraps it (a message
    kept as received). ``dead_letter_id``: the letter a replay parks again.
    """
    keys = payloads if events is None else events
    return [
        record(
            conn,
            payload=payload,
            reason=reason,
            message=message,
            event_id=event_id_of(event),
            team_id=team_id_of(event),
            now=now,
            dead_letter_id=dead_letter_id,
        )
        for payload, event in zip(payloads, keys, strict=True)
    ]


def mark_replayed(conn: Connection, *, dead_letter_id: str, now: datetime) -> None:
    """Close a dead letter whose event has now gone through."""
    conn.execute(
        update(dead_letters).where(dead_letters.c.id == dead_letter_id).values(replayed_at=now)
    )


_OPEN = (dead_letters.c.replayed_at.is_(None), dead_letters.c.discarded_at.is_(None))


def _filters(
    team_id: str | None, reason: str | None, is_open: bool | None, event_id: str | None
) -> list[ColumnElement[bool]]:
    where = [_in_team(team_id)]
    if reason is not None:
        where.append(dead_letters.c.reason == reason)
    if is_open is True:
        where.extend(_OPEN)
    elif is_open is False:
        where.append(or_(*(~test for test in _OPEN)))
    if event_id is not None:
        where.append(dead_letters.c.event_id == event_id)
    return where


def list_dead_letters(
    conn: Connection,
    *,
    include_replayed: bool = True,
    team_id: str | None = None,
    reason: str | None = None,
    event_id: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[DeadLetter]:
    """Dead letters, newest first; ``include_replayed=False``: the open ones only.

    ``team_id`` None is every team's and the letters of no team (operators);
    ``limit`` of them from ``offset``.
    """
    where = _filters(team_id, reason, None if include_replayed else True, event_id)
    stmt = (
        select(dead_letters)
        .where(*where)
        .order_by(dead_letters.c.last_seen_at.desc(), dead_letters.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_from_row(row) for row in conn.execute(stmt)]


def count_open_by_reason(conn: Connection) -> dict[str, int]:
    """How many letters are open, by reason: one GROUP BY, for the metrics scrape."""
    rows = conn.execute(
        select(dead_letters.c.reason, func.count()).where(*_OPEN).group_by(dead_letters.c.reason)
    )
    return {str(reason): int(count) for reason, count in rows}


@dataclass(frozen=True)
class DeadLetterLine:
    """What a listing prints of a dead letter: no payload, the message's start."""

    id: str
    team_id: str | None
    event_id: str | None
    reason: str
    message: str
    attempts: int
    replayed_at: datetime | None
    erased_at: datetime | None
    discarded_at: datetime | None

    @property
    def state(self) -> str:
        """As :attr:`DeadLetter.state`."""
        if self.discarded_at is not None:
            return "discarded"
        if self.replayed_at is not None:
            return "replayed"
        return "erased" if self.erased_at is not None else "open"


def list_dead_letter_lines(
    conn: Connection,
    *,
    include_replayed: bool = True,
    team_id: str | None = None,
    reason: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[DeadLetterLine]:
    """As ``list_dead_letters``, without payloads and with messages cut in SQL at 100 characters.

    A table of letters must not read their payloads: a page of them can be
    many megabytes that nobody prints.
    """
    where = _filters(team_id, reason, None if include_replayed else True, None)
    stmt = (
        select(
            dead_letters.c.id,
            dead_letters.c.team_id,
            dead_letters.c.event_id,
            dead_letters.c.reason,
            func.substr(dead_letters.c.message, 1, 100).label("message"),
            dead_letters.c.attempts,
            dead_letters.c.replayed_at,
            dead_letters.c.erased_at,
            dead_letters.c.discarded_at,
        )
        .where(*where)
        .order_by(dead_letters.c.last_seen_at.desc(), dead_letters.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [DeadLetterLine(**row._mapping) for row in conn.execute(stmt)]


@dataclass(frozen=True)
class DeadLetterPage:
    """A page of a team's dead letters, newest first, and how many match in all."""

    data: list[DeadLetter]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        """The API's ``{data, total, limit, offset}``."""
        return {
            "data": [letter.to_dict() for letter in self.data],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }


def page_dead_letters(
    conn: Connection,
    *,
    team_id: str,
    reason: str | None = None,
    is_open: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> DeadLetterPage:
    """One team's letters, newest first (``last_seen_at``, then id), with the total."""
    where = _filters(team_id, reason, is_open, None)
    total = conn.execute(select(func.count()).select_from(dead_letters).where(*where)).scalar()
    rows = conn.execute(
        select(dead_letters)
        .where(*where)
        .order_by(dead_letters.c.last_seen_at.desc(), dead_letters.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return DeadLetterPage([_from_row(row) for row in rows], int(total or 0), limit, offset)


def get_dead_letter(
    conn: Connection, *, dead_letter_id: str, team_id: str | None = None
) -> DeadLetter | None:
    """One dead letter by id (within ``team_id`` when given)."""
    if "\x00" in dead_letter_id:
        return None
    row = conn.execute(
        select(dead_letters).where(dead_letters.c.id == dead_letter_id, _in_team(team_id))
    ).one_or_none()
    return _from_row(row) if row is not None else None


# --- erasure ---------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """What identifies a contact in a payload: its id, its numbers (E.164), its email."""

    contact_id: str
    numbers: frozenset[str]
    email: str | None
    region: str  # the team's, to read national formats in payloads


def _email_pattern(email: str | None) -> re.Pattern[str] | None:
    if not email:
        return None
    # The whole address, not part of a longer one (a@b.co is not in xa@b.com).
    return re.compile(r"(?<![\w.%+-])" + re.escape(email) + r"(?![\w-]|\.\w)", re.IGNORECASE)


def _strings(value: Any) -> Iterator[str]:
    """Every text in a payload, keys included; a ``raw_json`` payload is read as JSON too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
        raw = value.get("raw_json")
        if isinstance(raw, str):
            yield from _strings(_json_or_none(raw))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _json_or_none(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _number_or_none(text: str, region: str) -> str | None:
    try:
        return normalise_phone(text, region)
    except ValueError:
        return None


def _numbers_in(text: str, region: str) -> Iterator[str]:
    """The phone numbers written in ``text``, as E.164: the whole text, or within prose."""
    whole = _number_or_none(text, region) if len(text) <= 40 else None
    if whole is not None:
        yield whole
    for match in phonenumbers.PhoneNumberMatcher(text, region):
        yield phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)


_NOT_DIGITS = re.compile(r"\D")


def _digits(text: str) -> str:
    """The text's decimal digits, in order, as ASCII."""
    found = _NOT_DIGITS.sub("", text)
    return found if found.isascii() else "".join(str(int(char)) for char in found)


class Naming:
    """Whether a payload names a subject: its id, one of its numbers, or its email.

    Anywhere in the payload, in any field (a summary quoting the number
    counts): erasure would rather redact one more letter of the team than
    keep one that names the person. Built once per erasure.
    """

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.email = _email_pattern(subject.email)
        # However a number is written, its national digits appear in order with
        # only non-digits between them: a text whose digits do not contain them
        # cannot hold it. That test is cheap; phonenumbers' matcher, which reads
        # the formats, costs milliseconds on a summary, so it runs only after it.
        self.national = {
            str(phonenumbers.parse(number).national_number) for number in subject.numbers
        }

    def _has_number(self, text_: str) -> bool:
        digits = _digits(text_)
        if not any(national in digits for national in self.national):
            return False
        found = _numbers_in(text_, self.subject.region)
        return any(number in self.subject.numbers for number in found)

    def __call__(self, payload: Any) -> bool:
        for text_ in _strings(payload):
            if self.subject.contact_id in text_:
                return True
            if self.email is not None and self.email.search(text_):
                return True
            if self.national and self._has_number(text_):
                return True
        return False


def _tombstone(event_id: str | None, reason: str, now: datetime) -> dict[str, Any]:
    return {"event_id": event_id, "reason": reason, "erased": True, "erased_at": now.isoformat()}


def erase_naming(conn: Connection, *, team_id: str, subject: Subject, now: datetime) -> int:
    """Erase the dead letters that name a contact being deleted; returns how many.

    The team's letters are read page by page (by id, on their team index)
    and matched here, because a payload writes a number in any format; a
    letter without a team (its payload's team was unreadable) is erased
    when it holds the contact's id, which no other contact has. Each
    match keeps its ``event_id``, reason, times and attempts; its payload
    becomes a tombstone and its message (which can quote the payload) a
    fixed text, in its ``attempt_log`` too.
    """
    names = Naming(subject)
    erased = [
        _erased(row, now)
        for row in _unerased_letters(conn, team_id)
        if (
            names(row.payload)
            if row.team_id == team_id
            else any(subject.contact_id in s for s in _strings(row.payload))
        )
    ]
    if erased:
        conn.execute(
            update(dead_letters)
            .where(dead_letters.c.id == bindparam("b_id"))
            .values(
                payload=bindparam("b_payload"),
                message=ERASED_MESSAGE,
                attempt_log=bindparam("b_log"),
                erased_at=now,
            ),
            erased,
        )
    return len(erased)


def _unerased_letters(conn: Connection, team_id: str) -> Iterator[Row[*tuple[Any, ...]]]:
    """The team's letters and those of no team not erased yet, read ``_ERASE_PAGE`` at a time."""
    scope = or_(dead_letters.c.team_id == team_id, dead_letters.c.team_id.is_(None))
    after = ""
    while True:
        rows = conn.execute(
            select(
                dead_letters.c.id,
                dead_letters.c.team_id,
                dead_letters.c.event_id,
                dead_letters.c.reason,
                dead_letters.c.payload,
                dead_letters.c.attempt_log,
            )
            .where(scope, dead_letters.c.erased_at.is_(None), dead_letters.c.id > after)
            .order_by(dead_letters.c.id)
            .limit(_ERASE_PAGE)
        ).all()
        yield from rows
        if len(rows) < _ERASE_PAGE:
            return
        after = rows[-1].id


def _erased(row: Row[*tuple[Any, ...]], now: datetime) -> dict[str, Any]:
    """The parameters that erase one letter: a tombstone, and its log's messages replaced."""
    return {
        "b_id": row.id,
        "b_payload": _tombstone(row.event_id, row.reason, now),
        "b_log": [
            {**entry, "message": entry.get("message") and ERASED_MESSAGE}
            for entry in row.attempt_log or []
        ],
    }
