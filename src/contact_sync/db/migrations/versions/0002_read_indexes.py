"""Read indexes measured at 1M contacts: team-led trigram search, do-not-call filter.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

``bench/list_queries.py`` (1M contacts in 100 teams) found two read paths whose cost grew
with the table instead of the team:

- Search: the trigram index of 0001 has no ``team_id``, so a common fragment (``o.co``,
  ``gmai``) collected its matches over the whole table (666k rows for ``o.co``) before the
  team filter; 130-200 ms. With ``team_id`` as the GIN index's first column (``btree_gin``)
  each bitmap holds only the team's candidates.
- ``doNotCall``: no index had the column, so ``total`` visited every row of the team in the
  heap (~9k scattered pages, 35-100 ms). ``(team_id, do_not_call, created_at, id)`` answers
  the count by an index-only scan and the page in order; ``do_not_call IS true`` as the read
  module writes it is matched as ``do_not_call = true``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEARCH_COLUMNS = (
    "lower(first_name || ' ' || last_name) gin_trgm_ops, "
    "lower(coalesce(email, '')) gin_trgm_ops, "
    "coalesce(phone, '') gin_trgm_ops, "
    "coalesce(phone_secondary, '') gin_trgm_ops"
)


def upgrade() -> None:
    """Add the do-not-call index everywhere; on PostgreSQL lead the trigram index by team."""
    op.create_index(
        "ix_contacts_team_dnc_created",
        "contacts",
        ["team_id", "do_not_call", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        op.execute(
            "CREATE INDEX ix_contacts_team_search_trgm ON contacts "
            f"USING gin (team_id, {_SEARCH_COLUMNS})"
        )
        op.execute("DROP INDEX ix_contacts_search_trgm")


def downgrade() -> None:
    """Back to the indexes of 0001."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE INDEX ix_contacts_search_trgm ON contacts USING gin ({_SEARCH_COLUMNS})"
        )
        op.execute("DROP INDEX ix_contacts_team_search_trgm")
    op.drop_index("ix_contacts_team_dnc_created", table_name="contacts")
