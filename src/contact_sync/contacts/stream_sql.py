"""The eligible stream on PostgreSQL: one statement a page, returning only eligible rows.

The evaluator (scheduling/eligibility) decides a contact from its place and its
attempts. On SQLite the stream reads callable rows in chunks and asks it of
each; here the same rules run inside the statement (docs/design.md §12):

- the clock and the calendar, which depend only on the place, are decided in
  Python per place, as ever; the statement gets the open places as one JSONB
  parameter ``{place key: [start of the local day, state's 24-hour cap]}`` and
  keeps the rows whose place is in it;
- the attempt rules are aggregates over the contact's calls within the
  lookback, in a ``LATERAL`` subquery that the row's ``last_called_at`` skips
  when no call can be that recent (the same guard as ``attempts_of``):
  the total is ``attempt_count`` less the calls after ``at``; the state's cap
  counts the rolling 24 hours; the day cap counts from the local day's start;
  and the retry delay blocks when the newest attempt is also the newest one
  still inside its outcome's delay (ties: any of them blocks, as the
  evaluator takes the longest).

So a page costs one statement (and the places query) whatever the share of
refused rows, with no per-row Python. Where the day's start cannot be given
as one instant (``OpenPlace.day_start`` is None), ``eligible_rows`` answers
None and the caller takes the chunked path; ``tests/test_eligibility_api.py``
holds the two paths and the single-contact endpoint to the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from contact_sync.contacts.store import CONTACT_FIELDS, DATETIME_FIELDS
from contact_sync.db.tables import calls, contacts
from contact_sync.db.types import UTCDateTime
from contact_sync.scheduling.eligibility import ROLLING, Moment, OpenPlace, Rules

_NO_CAP = 2**31 - 1


def _utc_text(column: ColumnElement[Any]) -> ColumnElement[str]:
    """What pydantic writes for a UTC datetime, as a JSON string: ISO 8601, the
    microseconds only when not zero, and "Z" (``contacts.store._utc_text``)."""
    utc = func.timezone("UTC", column)
    text = func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS.US', type_=Text)
    return _sql_text('"').concat(func.replace(text, ".000000", "")).concat(_sql_text('Z"'))


def _sql_text(value: str) -> ColumnElement[str]:
    # Our own constant text (field names, punctuation), never a caller's value.
    return literal_column("'" + value.replace("'", "''") + "'", Text)


def _json_value(name: str) -> ColumnElement[str]:
    """A column of the contact as JSON text."""
    column = contacts.c[name]
    if name in DATETIME_FIELDS:
        value = _utc_text(column)
    elif isinstance(column.type, String):
        value = cast(func.to_json(column), Text)
    else:  # booleans, integers and JSON documents write themselves as JSON
        value = cast(column, Text)
    return func.coalesce(value, _sql_text("null")) if column.nullable else value


def contact_document() -> ColumnElement[str]:
    """The contact as the API's JSON text, written by PostgreSQL: the fields in the
    model's order, values as stored, datetimes as pydantic writes them
    (tests/test_api.py holds each equal to the contact's own GET).

    The stream's rows then reach the response as text, with no Python object
    per value (docs/design.md §12). Joined by ``concat`` rather than
    ``json_build_object``, which looks up each argument's type again for every
    row: 4.8 µs a contact against 9.1 µs (10,000 contacts).
    """
    parts: list[ColumnElement[str]] = []
    for number, name in enumerate(CONTACT_FIELDS):
        parts += [_sql_text(("{" if number == 0 else ",") + f'"{name}":'), _json_value(name)]
    return func.concat(*parts, _sql_text("}"), type_=Text)


def _entry(places: ColumnElement[Any], key: ColumnElement[str]) -> ColumnElement[Any]:
    # Grouped: ``->`` and ``||`` share one precedence in PostgreSQL, left to right.
    return places.op("->", return_type=JSONB)(key.self_group())


def _item(entry: ColumnElement[Any], index: int) -> ColumnElement[str]:
    return entry.op("->>", return_type=Text)(literal(index, Integer))


_CLOSED = 0  # a known place the clock refuses, in the map


def _places_json(places: dict[str, OpenPlace | None]) -> dict[str, Any]:
    return {
        key: _CLOSED
        if p is None
        else [None if p.day_start is None else p.day_start.isoformat(), p.state_cap]
        for key, p in places.items()
    }


@dataclass(frozen=True)
class Shape:
    """What the statement's text depends on: which attempt rules are set. Their values
    (``at``, the caps, the delays' cutoffs) are parameters (``shape_parameters``), so one
    statement serves every walk of that shape and keeps its prepared plan."""

    attempts: bool
    total_cap: bool
    day_cap: bool
    state_caps: bool
    delays: tuple[str, ...]  # the outcomes with a retry delay

    @classmethod
    def of(cls, rules: Rules) -> Shape:
        """The shape of ``rules``."""
        jurisdictions = rules.jurisdictions
        states = jurisdictions.states.values() if jurisdictions is not None else ()
        policy = rules.policy
        return cls(
            attempts=rules.attempts_matter,
            total_cap=policy.max_attempts_total is not None,
            day_cap=policy.max_attempts_per_day is not None,
            state_caps=any(state.attempt_cap_24h is not None for state in states),
            delays=tuple(sorted(k for k, v in rules.delays.items() if v > timedelta(0))),
        )


def shape_parameters(moment: Moment) -> dict[str, Any]:
    """The values of the statement's rule parameters at the moment's ``at``."""
    rules, at = moment.rules, moment.at
    policy = rules.policy
    values: dict[str, Any] = {
        "at": at,
        "since": at - rules.lookback,
        "rolling_since": at - ROLLING,
        "total_cap": policy.max_attempts_total,
        "day_cap": policy.max_attempts_per_day,
    }
    for name, delay in rules.delays.items():
        values[f"cutoff_{name}"] = at - delay
    return values


def _moment(name: str) -> ColumnElement[Any]:
    return bindparam(name, type_=UTCDateTime)


def _attempts(shape: Shape, entry: ColumnElement[Any]) -> Any:
    """The row's attempt figures as of ``at``: one aggregate row per contact (LATERAL)."""
    at, since = _moment("at"), _moment("since")
    ended = calls.c.ended_at
    counted = ended <= at
    columns: list[Any] = [func.count().filter(ended > at).label("later")]
    if shape.state_caps:
        rolling = _moment("rolling_since")
        columns.append(func.count().filter(counted, ended > rolling).label("last_day"))
    if shape.day_cap:
        day_start = cast(_item(entry, 0), DateTime(timezone=True))
        columns.append(func.count().filter(counted, ended >= day_start).label("today"))
    if shape.delays:
        cutoff = case(
            {name: _moment(f"cutoff_{name}") for name in shape.delays},
            value=calls.c.outcome,
            else_=None,
        )
        columns.append(func.max(ended).filter(counted).label("newest"))
        columns.append(func.max(ended).filter(counted, ended > cutoff).label("blocking"))
    return (
        select(*columns)
        .where(
            calls.c.contact_id == contacts.c.id,
            calls.c.team_id == bindparam("team_id", type_=String),
            calls.c.direction == "outbound",
            ended > since,
            contacts.c.last_called_at > since,
        )
        .lateral("attempts")
    )


def _attempt_conditions(
    shape: Shape, attempts: Any, entry: ColumnElement[Any]
) -> list[ColumnElement[bool]]:
    """The attempt rules that are set, each as a condition on the LATERAL's figures."""
    found: list[ColumnElement[bool]] = []
    if shape.total_cap:
        cap = bindparam("total_cap", type_=Integer)
        found.append(contacts.c.attempt_count - attempts.c.later < cap)
    if shape.state_caps:
        state_cap = func.coalesce(cast(_item(entry, 1), Integer), _NO_CAP)
        found.append(attempts.c.last_day < state_cap)
    if shape.day_cap:
        found.append(attempts.c.today < bindparam("day_cap", type_=Integer))
    if shape.delays:
        found.append(or_(attempts.c.blocking.is_(None), attempts.c.blocking < attempts.c.newest))
    return found


def eligible_statement(
    shape: Shape,
    *,
    place_key: ColumnElement[str],
    where: Sequence[ColumnElement[bool]],
    columns: Sequence[Any],
) -> Select[Any]:
    """The rows of ``where`` eligible at ``at``, in id order, each with
    ``unseen_place``: true when its place is not in the map (then the row was not
    judged by the clock and the caller must read the places again).

    Parameters: ``places`` (``places_parameter``), ``size`` (the rows wanted),
    ``team_id``, the rule values (``shape_parameters``), and any the caller put
    in ``where`` (the keyset).
    """
    # A JSONB parameter, not text cast to JSONB: under a prepared statement's generic
    # plan a cast would parse the whole map again for every row.
    entry = _entry(bindparam("places", type_=JSONB), place_key)
    # A JSONB parameter, so no per-row cast (and no quoted constant in the SQL, which
    # quotes only the sticky statuses: tests/test_vocabulary.py reads them from it).
    closed = bindparam("closed_place", _CLOSED, type_=JSONB)
    conditions = [*where, entry.is_distinct_from(closed)]
    statement = select(*columns, entry.is_(None).label("unseen_place"))
    if shape.attempts:
        attempts = _attempts(shape, entry)
        statement = statement.select_from(contacts.join(attempts, true()))
        conditions += _attempt_conditions(shape, attempts, entry)
    return statement.where(*conditions).order_by(contacts.c.id).limit(bindparam("size"))


def places_parameter(moment: Moment, places: dict[str, OpenPlace | None]) -> Any:
    """The ``places`` parameter of ``eligible_statement`` from each known place's
    ``OpenPlace`` (None: closed); None when an open place's day cannot be given to SQL
    as one interval (the caller then takes the chunked path)."""
    day_cap = moment.rules.policy.max_attempts_per_day is not None
    if day_cap and any(p is not None and p.day_start is None for p in places.values()):
        return None
    return _places_json(places)
