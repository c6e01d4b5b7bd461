"""Reading what eligibility needs: a contact's facts and its attempts (docs/design.md §12).

The single-contact endpoint and the eligible stream read attempts through
``attempts_of``, the same statement for one contact or a page of them, so the
two hand the pure evaluator the same input. Nothing here begins or commits.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from contact_sync.db.tables import calls, contacts
from contact_sync.errors import ContactNotFound
from contact_sync.scheduling.eligibility import (
    Attempt,
    Attempts,
    ContactFacts,
    Eligibility,
    Rules,
    evaluate,
    rules_for,
)
from contact_sync.scheduling.policies import load_policy

# The columns of a contact that eligibility reads.
FACT_COLUMNS = (
    contacts.c.do_not_call,
    contacts.c.phone,
    contacts.c.lead_status,
    contacts.c.timezone,
    contacts.c.phone_zone,
    contacts.c.phone_state,
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


NO_ATTEMPTS = Attempts(0)


def attempts_of(
    conn: Connection, team_id: str, ids: tuple[str, str], at: datetime, rules: Rules
) -> dict[str, Attempts]:
    """The attempts as of ``at`` of the team's contacts with ids in ``[first, last]``.

    A range of ids, not a list: the statement keeps the same parameters for any
    page (psycopg prepares it once); the recent calls come from the team's calls
    of the lookback (index ``ix_calls_team_ended``), not from every call. The total
    is counted only when the policy caps it: the evaluator reads it for nothing else.
    Contacts absent from the answer have no attempts (``NO_ATTEMPTS``).
    """
    first, last = ids
    where = [
        calls.c.team_id == team_id,
        calls.c.contact_id >= first,
        calls.c.contact_id <= last,
        calls.c.direction == "outbound",
        calls.c.ended_at <= at,
    ]
    recent: dict[str, list[Attempt]] = defaultdict(list)
    rows = conn.execute(
        select(calls.c.contact_id, calls.c.ended_at, calls.c.outcome).where(
            *where, calls.c.ended_at > at - rules.lookback
        )
    ).all()
    for contact_id, ended_at, outcome in rows:
        recent[contact_id].append(Attempt(ended_at, outcome))
    totals: dict[str, int] = {}
    if rules.policy.max_attempts_total is not None:
        counted = conn.execute(
            select(calls.c.contact_id, func.count()).where(*where).group_by(calls.c.contact_id)
        )
        totals = {row.contact_id: int(row[1]) for row in counted}
    return {
        contact_id: Attempts(
            totals.get(contact_id, 0),
            tuple(sorted(recent.get(contact_id, []), key=lambda a: a.ended_at)),
        )
        for contact_id in recent.keys() | totals.keys()
    }


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
    attempts = attempts_of(conn, team_id, (contact_id, contact_id), at, rules)
    return evaluate(facts_of(row), attempts.get(contact_id, NO_ATTEMPTS), rules, at)
