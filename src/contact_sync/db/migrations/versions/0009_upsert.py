"""The team setting ``duplicate_phones`` and the index an upsert matches addresses by.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

- ``teams.duplicate_phones`` (docs/design.md §14): ``allow`` (the default: as before)
  or ``reject`` (no write gives a contact a number another contact of the team has).
- ``ix_contacts_team_email``: ``(team_id, lower(email))``, for the upsert's
  case-insensitive match by address. Matching by number uses the indexes of
  0001 (``(team_id, phone)`` and ``(team_id, phone_secondary)``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column with its default, and the address index."""
    # Plain ADD COLUMN on both backends (see 0003: no batch rebuild of referenced tables).
    op.add_column(
        "teams",
        sa.Column(
            "duplicate_phones", sa.String(8), nullable=False, server_default=sa.text("'allow'")
        ),
    )
    op.create_index("ix_contacts_team_email", "contacts", ["team_id", sa.text("lower(email)")])


def downgrade() -> None:
    """Back to 0008: the setting is lost."""
    op.drop_index("ix_contacts_team_email", table_name="contacts")
    op.execute("ALTER TABLE teams DROP COLUMN duplicate_phones")  # SQLite 3.35+
