"""The calls ledger, what a contact's number says, and the team's calling policy.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

- ``calls`` (docs/design.md §11): one row per ``(team_id, call_id)``, deleted with its
  contact (it holds the number and the summary), indexed for a contact's calls
  newest first and for the attempts the eligible stream counts.
- ``contacts``: ``call_count``, ``last_called_at``, ``last_call_outcome`` (read-only,
  kept by the event apply, not versioned); ``phone_zone`` and ``phone_state`` (what
  the primary number says: the contact writer keeps them, this migration fills
  them for existing rows).
- ``calling_policies`` (one per team; none means the defaults) and
  ``calling_policy_changes`` (who changed it, when, from what, to what).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from contact_sync.db.types import UTCDateTime
from contact_sync.scheduling.numbers import phone_facts

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(JSONB(), "postgresql")
_BATCH = 5000


def _fill_phone_facts(bind: sa.Connection) -> None:
    """``phone_zone``/``phone_state`` of every contact with a number, in id-ordered batches."""
    after = ""
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, phone FROM contacts WHERE phone IS NOT NULL AND id > :after "
                "ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": _BATCH},
        ).all()
        if not rows:
            return
        updates = []
        for contact_id, phone in rows:
            zone, state = phone_facts(phone)
            if zone is not None or state is not None:
                updates.append({"b_id": contact_id, "b_zone": zone, "b_state": state})
        if updates:
            bind.execute(
                sa.text(
                    "UPDATE contacts SET phone_zone = :b_zone, phone_state = :b_state "
                    "WHERE id = :b_id"
                ),
                updates,
            )
        after = rows[-1][0]


def upgrade() -> None:
    """Create the ledger and policy tables; add and fill the contact columns."""
    bind = op.get_bind()
    op.create_table(
        "calls",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "team_id", sa.String(36), sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "contact_id",
            sa.String(36),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("campaign_id", sa.String(200), nullable=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("duration_seconds", sa.Integer, nullable=True),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("ended_at", UTCDateTime, nullable=False),
        sa.Column("phone", sa.String(16), nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("team_id", "call_id", name="ux_calls_team_call"),
    )
    op.create_index("ix_calls_contact_ended", "calls", ["contact_id", "ended_at", "id"])

    # Plain ADD COLUMN on both backends (see 0003: no batch rebuild of referenced tables).
    op.add_column(
        "contacts",
        sa.Column("call_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("contacts", sa.Column("last_called_at", UTCDateTime, nullable=True))
    op.add_column("contacts", sa.Column("last_call_outcome", sa.String(16), nullable=True))
    op.add_column("contacts", sa.Column("phone_zone", sa.String(64), nullable=True))
    op.add_column("contacts", sa.Column("phone_state", sa.String(2), nullable=True))
    _fill_phone_facts(bind)

    op.create_table(
        "calling_policies",
        sa.Column(
            "team_id",
            sa.String(36),
            sa.ForeignKey("teams.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("policy", JSON_DOC, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=True),
    )
    op.create_table(
        "calling_policy_changes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "team_id", sa.String(36), sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("changed_at", UTCDateTime, nullable=False),
        sa.Column("changed_by", sa.String(100), nullable=True),
        sa.Column("old", JSON_DOC, nullable=False),
        sa.Column("new", JSON_DOC, nullable=False),
    )
    op.create_index(
        "ix_calling_policy_changes_team", "calling_policy_changes", ["team_id", "changed_at"]
    )


def downgrade() -> None:
    """Back to 0004: the ledger, the policies and their history are lost."""
    op.drop_index("ix_calling_policy_changes_team", table_name="calling_policy_changes")
    op.drop_table("calling_policy_changes")
    op.drop_table("calling_policies")
    for column in (
        "phone_state",
        "phone_zone",
        "last_call_outcome",
        "last_called_at",
        "call_count",
    ):
        op.execute(f"ALTER TABLE contacts DROP COLUMN {column}")  # SQLite 3.35+ has it
    op.drop_index("ix_calls_contact_ended", table_name="calls")
    op.drop_table("calls")
