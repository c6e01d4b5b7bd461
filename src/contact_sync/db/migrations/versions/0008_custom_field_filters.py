"""The index behind the ``cf.`` filters' equality (docs/design.md §13).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

- ``ix_contacts_team_custom_fields`` on PostgreSQL: a GIN index of ``(team_id,
  custom_fields jsonb_path_ops)`` (``team_id`` through ``btree_gin``, as the search index
  of 0002). ``cf.KEY=``, ``cf.KEY.in=`` and a multi_select's contains are JSONB
  containment (``@>``), which it answers with the team's matches only, whatever the key:
  one index for every team's fields, none created or dropped with a definition. Ranges
  and ``exists`` read the team's rows (the cost follows the team's size). SQLite gets
  nothing: it reads ``json_extract`` row by row, correct and slower.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the index on PostgreSQL."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        op.execute(
            "CREATE INDEX ix_contacts_team_custom_fields ON contacts "
            "USING gin (team_id, custom_fields jsonb_path_ops)"
        )


def downgrade() -> None:
    """Back to 0007."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_contacts_team_custom_fields")
