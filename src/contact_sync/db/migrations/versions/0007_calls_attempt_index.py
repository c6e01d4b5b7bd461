"""An index for the attempts the eligibility of a page reads (docs/design.md §12).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

- ``ix_calls_team_ended`` on ``calls (team_id, ended_at)``: the eligible stream reads,
  per page, the team's calls that ended within the lookback before ``at`` (48 hours, or
  the longest retry delay); without it that is a scan of every call of every team.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the index."""
    op.create_index("ix_calls_team_ended", "calls", ["team_id", "ended_at"])


def downgrade() -> None:
    """Back to 0006."""
    op.drop_index("ix_calls_team_ended", table_name="calls")
