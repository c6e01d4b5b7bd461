"""Reading what eligibility needs: a contact's facts and its attempts (docs/design.md §12).

The single-contact endpoint and the eligible stream read attempts through
``attempts_of``, the same statement for one contact or a chunk of them, so the
two hand the pure evaluator the same input. Nothing here begins or commits.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from contact_sync.db.tables import calls, contacts
from contact_sync.errors import ContactNotFound
from contact_sync.scheduling.eligibility import (
    NO_ATTEMPTS,
    Attempt,
    Attempts,
    ContactFacts,
    Eligibility,
    Rules,
    evaluate,
    rules_for,
)
from contact_sync.scheduling.policies import load_policy

# The columns of a contact that eligibility reads: its facts, and what the ledger keeps on
# it (``last_called_at``: whether any call can be recent; ``attempt_count``: the total).
FACT_COLUMNS = (
    contacts.c.id,
    contacts.c.do_not_call,
    contacts.c.phone,
    contacts.c.lead_status,
    contacts.c.timezone,
    contacts.c.phone_zone,
    contacts.c.phone_state,
    contacts.c.last_called_at,
    contacts.c.attempt_count,
)


def facts_of(row: Any) -> ContactFacts:
    """A selected row (with ``FACT_COLUMNS``) as the evaluator's input."""
    return ContactFacts(
        do_not_call=row.do_not_call,
        phone=row.phone,
        lead_status=row.lead_status,
        timezone=row.timezone,
        phone_zone=row.phone_zone,
        phone_state=row.phone_state,
    )


def _any_of(column: ColumnElement[str], values: list[str], dialect: str) -> ColumnElement[bool]:
    """``column`` is one of ``values``: one parameter whatever their number (one prepared
    statement for any page), an index probe per value."""
    if dialect == "postgresql":
        return column == any_(bindparam("contact_ids", values, type_=ARRAY(Text)))
    element = func.json_each(bindparam("contact_ids", json.dumps(values))).table_valued("value")
    return column.in_(select(element.c.value))


def attempts_of(
    conn: Connection, team_id: str, rows: Sequence[Any], at: datetime, rules: Rules
) -> dict[str, Attempts]:
    """The attempts as of ``at`` of the contacts of ``rows`` (selected with ``FACT_COLUMNS``).

    The ledger is read only for contacts whose latest call (``last_called_at``,
    kept by the contact writer) ended within the lookback before ``at``: one
    statement for all of them, each contact's calls since ``at − lookback`` found
    by the index ``ix_calls_contact_ended``. The total as of ``at`` is the
    contact's ``attempt_count`` (all its outbound calls, kept by the writer) less
    those that ended after ``at``, which that read includes: exact for any
    ``at``, without counting every call. Contacts absent from the answer have no
    attempts (``NO_ATTEMPTS``).
    """
    since = at - rules.lookback
    wanted = [r.id for r in rows if r.last_called_at is not None and r.last_called_at > since]
    recent: dict[str, list[Attempt]] = defaultdict(list)
    later: dict[str, int] = defaultdict(int)
    if wanted:
        found = conn.execute(
            select(calls.c.contact_id, calls.c.ended_at, calls.c.outcome).where(
                _any_of(calls.c.contact_id, wanted, conn.dialect.name),
                calls.c.team_id == team_id,
                calls.c.direction == "outbound",
                calls.c.ended_at > since,
            )
        )
        for contact_id, ended_at, outcome in found:
            if ended_at <= at:
                recent[contact_id].append(Attempt(ended_at, outcome))
            else:
                later[contact_id] += 1
    answer: dict[str, Attempts] = {}
    for row in rows:
        total = row.attempt_count - later.get(row.id, 0)
        mine = recent.get(row.id)
        if mine:
            answer[row.id] = Attempts(total, tuple(sorted(mine, key=lambda a: a.ended_at)))
        elif total:
            answer[row.id] = Attempts(total)
    return answer


def contact_eligibility(
    conn: Connection, *, team_id: str, contact_id: str, at: datetime
) -> Eligibility:
    """Whether the team may call the contact at ``at``, why not, and from when."""
    row = conn.execute(
        select(*FACT_COLUMNS).where(contacts.c.team_id == team_id, contacts.c.id == contact_id)
    ).one_or_none()
    if row is None:
        raise ContactNotFound(contact_id)
    rules = rules_for(load_policy(conn, team_id))
    attempts = attempts_of(conn, team_id, [row], at, rules)
    return evaluate(facts_of(row), attempts.get(contact_id, NO_ATTEMPTS), rules, at)
