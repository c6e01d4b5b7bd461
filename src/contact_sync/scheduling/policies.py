"""Reading and writing a team's calling policy (table ``calling_policies``).

Nothing here begins or commits: the caller's unit of work does.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from contact_sync.db.tables import calling_policies
from contact_sync.scheduling.policy import DEFAULT_POLICY, CallingPolicy


def load_policy(conn: Connection, team_id: str) -> CallingPolicy:
    """The team's policy, or the defaults when it never set one."""
    stored = conn.execute(
        select(calling_policies.c.policy).where(calling_policies.c.team_id == team_id)
    ).scalar_one_or_none()
    return DEFAULT_POLICY if stored is None else CallingPolicy.model_validate(stored)
