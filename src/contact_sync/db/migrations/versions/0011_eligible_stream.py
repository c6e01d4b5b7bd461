"""A count of outbound attempts on the contact, for the eligible stream (docs/design.md §12).

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-04

- ``contacts.attempt_count``: how many ``outbound`` rows the contact has in the calls
  ledger, ever. Read-only and internal (not shown, not versioned): the contact writer
  recomputes it with ``call_count``, ``last_called_at`` and ``last_call_outcome`` whenever
  one of the contact's ledger rows is written. The stream reads a team's caps from it
  instead of counting every call of every contact of a page; this migration fills it for
  the contacts that have calls.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column and fill it from the ledger."""
    op.add_column(
        "contacts",
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.execute(
        "UPDATE contacts SET attempt_count = (SELECT count(*) FROM calls "
        "WHERE calls.contact_id = contacts.id AND calls.direction = 'outbound') "
        "WHERE id IN (SELECT contact_id FROM calls WHERE direction = 'outbound')"
    )


def downgrade() -> None:
    """Back to 0008."""
    op.execute("ALTER TABLE contacts DROP COLUMN attempt_count")  # SQLite 3.35+ has it
