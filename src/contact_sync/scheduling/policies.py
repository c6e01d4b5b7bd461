"""Reading and writing a team's calling policy (tables ``calling_policies`` and
``calling_policy_changes``, docs/design.md §12).

A write that changes something replaces the team's row and adds one history
row with the whole policy before and after (the defaults before the first
change); a write that changes nothing writes nothing, so the history lists
real changes only and ``updated_at`` says when the policy last changed.
Nothing here begins or commits: the caller's unit of work does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from contact_sync.clock import utcnow
from contact_sync.db.tables import calling_policies, calling_policy_changes, teams
from contact_sync.errors import TeamNotFound
from contact_sync.ids import new_id
from contact_sync.scheduling.policy import DEFAULT_POLICY, CallingPolicy, policy_json


@dataclass(frozen=True)
class StoredPolicy:
    """A team's policy and who last changed it (both None: the defaults, never changed)."""

    policy: CallingPolicy
    updated_at: datetime | None
    updated_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """The API's and the CLI's answer: the policy's keys, then ``updated_at``/``by``."""
        return {
            **policy_json(self.policy),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class PolicyChange:
    """One change of a team's policy: when, by whom (a key id or ``cli:<user>``), from, to."""

    changed_at: datetime
    changed_by: str | None
    old: dict[str, Any]
    new: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, times in ISO 8601."""
        return {
            "changed_at": self.changed_at.isoformat(),
            "changed_by": self.changed_by,
            "old": self.old,
            "new": self.new,
        }


@dataclass(frozen=True)
class ChangePage:
    """A page of a team's policy changes, newest first."""

    data: list[PolicyChange]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        """``{data, total, limit, offset}`` as the API answers it."""
        return {
            "data": [change.to_dict() for change in self.data],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }


def load_policy(conn: Connection, team_id: str) -> CallingPolicy:
    """The team's policy, or the defaults when it never set one."""
    return get_policy(conn, team_id).policy


def get_policy(conn: Connection, team_id: str) -> StoredPolicy:
    """The team's policy with who changed it last, or the defaults with None for both."""
    row = conn.execute(
        select(
            calling_policies.c.policy, calling_policies.c.updated_at, calling_policies.c.updated_by
        ).where(calling_policies.c.team_id == team_id)
    ).one_or_none()
    if row is None:
        return StoredPolicy(DEFAULT_POLICY, None, None)
    policy = _parsed(json.dumps(row.policy, sort_keys=True))
    return StoredPolicy(policy, row.updated_at, row.updated_by)


def _lock_team(conn: Connection, team_id: str) -> None:
    """Serialise a team's policy writers (``FOR NO KEY UPDATE`` of its row), so each history
    row's ``old`` is what the previous writer left; contacts may still be inserted meanwhile.

    SQLite takes its write lock at BEGIN (db/engine.py). An unknown team is ``TeamNotFound``.
    """
    found = conn.execute(
        select(teams.c.id).where(teams.c.id == team_id).with_for_update(key_share=True)
    ).one_or_none()
    if found is None:
        raise TeamNotFound(team_id)


def save_policy(
    conn: Connection,
    team_id: str,
    policy: CallingPolicy,
    by: str | None,
    *,
    now: datetime | None = None,
) -> StoredPolicy:
    """Replace the team's policy with ``policy``, recording the change (who: ``by``).

    Returns what is stored afterwards; when ``policy`` equals the current one
    nothing is written and the current row (its time and author) is returned.
    """
    _lock_team(conn, team_id)
    current = get_policy(conn, team_id)
    if current.policy == policy:
        return current
    when = now or utcnow()
    values = {"policy": policy_json(policy), "updated_at": when, "updated_by": by}
    if current.updated_at is None:
        conn.execute(insert(calling_policies).values(team_id=team_id, **values))
    else:
        conn.execute(
            update(calling_policies).where(calling_policies.c.team_id == team_id).values(**values)
        )
    conn.execute(
        insert(calling_policy_changes).values(
            id=new_id(),
            team_id=team_id,
            changed_at=when,
            changed_by=by,
            old=policy_json(current.policy),
            new=values["policy"],
        )
    )
    return StoredPolicy(policy, when, by)


def policy_changes(conn: Connection, team_id: str, *, limit: int, offset: int) -> ChangePage:
    """A page of the team's policy changes, newest first (ties by id, newest id first)."""
    changes = calling_policy_changes.c
    total = conn.execute(
        select(func.count()).select_from(calling_policy_changes).where(changes.team_id == team_id)
    ).scalar_one()
    rows = conn.execute(
        select(changes.changed_at, changes.changed_by, changes.old, changes.new)
        .where(changes.team_id == team_id)
        .order_by(changes.changed_at.desc(), changes.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    data = [PolicyChange(row.changed_at, row.changed_by, row.old, row.new) for row in rows]
    return ChangePage(data=data, total=total, limit=limit, offset=offset)


@lru_cache(maxsize=1024)
def _parsed(text: str) -> CallingPolicy:
    # Validating a policy costs milliseconds (its zone is checked against every
    # IANA name); a page of the eligible stream reads it each time. Policies are
    # frozen, so one validated object per stored text is safe to share.
    return CallingPolicy.model_validate_json(text)
