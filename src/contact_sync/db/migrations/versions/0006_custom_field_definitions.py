"""Custom-field definitions and the team's setting for undefined keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

- ``custom_field_definitions`` (docs/design.md §13): one row per ``(team_id, key)``,
  deleted with its team; ``spec`` holds the constraints as JSON (a 64-bit bound
  stays exact there, where a float column would round it).
- ``teams.undefined_custom_fields``: ``accept`` (the default: stored untyped, as
  before) or ``reject``.

Existing values are not rewritten: a definition types what is written from then on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from contact_sync.db.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Create the definitions table; add the teams column with its default."""
    op.create_table(
        "custom_field_definitions",
        sa.Column(
            "team_id",
            sa.String(36),
            sa.ForeignKey("teams.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("spec", JSON_DOC, nullable=False),
        sa.Column("ai_extractable", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    # Plain ADD COLUMN on both backends (see 0003: no batch rebuild of referenced tables).
    op.add_column(
        "teams",
        sa.Column(
            "undefined_custom_fields",
            sa.String(8),
            nullable=False,
            server_default=sa.text("'accept'"),
        ),
    )


def downgrade() -> None:
    """Back to 0005: the definitions and the setting are lost (values stay)."""
    op.execute("ALTER TABLE teams DROP COLUMN undefined_custom_fields")  # SQLite 3.35+
    op.drop_table("custom_field_definitions")
