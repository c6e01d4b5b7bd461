"""Reading and writing a team's calling policy (table ``calling_policies``).

Nothing here begins or commits: the caller's unit of work does.
"""

from __future__ import annotations

import json
from functools import lru_cache

from sqlalchemy import Connection, select

from contact_sync.db.tables import calling_policies
from contact_sync.scheduling.policy import DEFAULT_POLICY, CallingPolicy


def load_policy(conn: Connection, team_id: str) -> CallingPolicy:
    """The team's policy, or the defaults when it never set one."""
    stored = conn.execute(
        select(calling_policies.c.policy).where(calling_policies.c.team_id == team_id)
    ).scalar_one_or_none()
    if stored is None:
        return DEFAULT_POLICY
    return _parsed(json.dumps(stored, sort_keys=True))


@lru_cache(maxsize=1024)
def _parsed(text: str) -> CallingPolicy:
    # Validating a policy costs milliseconds (its zone is checked against every
    # IANA name); a page of the eligible stream reads it each time. Policies are
    # frozen, so one validated object per stored text is safe to share.
    return CallingPolicy.model_validate_json(text)
