"""A count of outbound attempts on the contact, for the eligible stream (docs/design.md §12).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

- ``contacts.attempt_count``: how many ``outbound`` rows the contact has in the calls
  ledger, ever. Read-only and internal (not shown, not versioned): the contact writer
  recomputes it with ``call_count``, ``last_called_at`` and ``last_call_outcome`` whenever
  one of the contact's ledger rows is written. The stream reads a team's caps from it
  instead of counting every call of every contact of a page; this migration fills it for
  the contacts that have calls.
- ``ix_contacts_callable_places`` on the callable contacts' ``(team_id, timezone,
  phone_zone, phone_state, id)``: the places (zone, number zone, state) of a team's
  callable contacts still ahead in a walk, which the stream reads per page, come from it
  alone (an index-only scan) instead of from every such row of the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

STICKY = "('converted', 'customer', 'churned', 'do_not_contact')"


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
    op.create_index(
        "ix_contacts_callable_places",
        "contacts",
        ["team_id", "timezone", "phone_zone", "phone_state", "id"],
        postgresql_where=sa.text(
            f"do_not_call = false AND phone IS NOT NULL AND lead_status NOT IN {STICKY}"
        ),
        sqlite_where=sa.text(
            f"do_not_call = 0 AND phone IS NOT NULL AND lead_status NOT IN {STICKY}"
        ),
    )


def downgrade() -> None:
    """Back to 0010."""
    op.drop_index("ix_contacts_callable_places", table_name="contacts")
    op.execute("ALTER TABLE contacts DROP COLUMN attempt_count")  # SQLite 3.35+ has it
