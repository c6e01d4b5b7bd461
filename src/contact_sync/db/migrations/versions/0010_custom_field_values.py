"""The typed side table of the ``cf.`` filters (docs/design.md §13), backfilled.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

- ``custom_field_values``: one row per value of a contact's ``custom_fields`` (one
  per string of an array), typed by its JSON value (``kind``: number, boolean, date-,
  date-time- or other string, array, array element), ``num`` numeric and ``txt`` text
  (byte order on PostgreSQL). Kept by the contact writer in the transaction that writes
  the contact (``contacts/field_values.py``), which deletes them with the contact (no
  foreign keys: their check on every inserted row is the worker's cost).
- B-tree indexes ``(team_id, key, kind, txt, contact_id)`` (equality, ``.in``, date
  ranges, ``exists``, a multi_select's contains) and ``(team_id, key, num, contact_id)``
  (number ranges): a filter reads only its team's entries of its key, by an index-only
  scan. ``(contact_id, key, kind)`` with the team and the values serves the writer and the
  per-contact probe. On PostgreSQL, extended statistics on ``(key, kind, txt)`` and
  ``(team_id, key)``: every key shares the columns, and the planner would otherwise
  take their selectivities as independent.
- 0008's GIN index ``(team_id, custom_fields jsonb_path_ops)`` is dropped: the side
  table answers every filter it answered, and each write of custom fields paid for it.
- The rows of existing contacts are computed here (on PostgreSQL by one
  ``INSERT ... SELECT`` over ``jsonb_each``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from contact_sync.contacts.field_values import rebuild_all

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and its indexes, then fill it from ``contacts``."""
    op.create_table(
        "custom_field_values",
        # No foreign keys: a check per inserted row would cost the worker (about ten rows
        # an event); the writer deletes a contact's rows with the contact.
        sa.Column("team_id", sa.String(36), nullable=False),
        sa.Column("contact_id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(1), nullable=False),
        sa.Column("num", sa.Numeric, nullable=True),
        sa.Column("txt", sa.Text().with_variant(sa.Text(collation="C"), "postgresql")),
    )
    rebuild_all(op.get_bind())
    op.create_index(
        "ix_custom_field_values_text",
        "custom_field_values",
        ["team_id", "key", "kind", "txt", "contact_id"],
    )
    op.create_index(
        "ix_custom_field_values_num",
        "custom_field_values",
        ["team_id", "key", "num", "contact_id"],
        postgresql_where=sa.text("num IS NOT NULL"),
        sqlite_where=sa.text("num IS NOT NULL"),
    )
    op.create_index(
        "ix_custom_field_values_contact",
        "custom_field_values",
        ["contact_id", "key", "kind"],
        postgresql_include=["team_id", "num", "txt"],
    )
    if op.get_bind().dialect.name == "postgresql":
        _statistics()
        # 0008's GIN index now answers nothing the side table does not (equality on a
        # string longer than its index reads the team's rows): every write paid for it.
        op.execute("DROP INDEX IF EXISTS ix_contacts_team_custom_fields")


def _statistics() -> None:
    # One column holds every key's values: without these the planner multiplies the
    # selectivities of key, kind and value as if independent (estimates 100x too low).
    op.execute(
        "CREATE STATISTICS st_custom_field_values_key (mcv, dependencies) "
        "ON key, kind, txt FROM custom_field_values"
    )
    op.execute(
        "CREATE STATISTICS st_custom_field_values_team (mcv, dependencies, ndistinct) "
        "ON team_id, key FROM custom_field_values"
    )
    op.execute("ANALYZE custom_field_values")


def downgrade() -> None:
    """Back to 0009."""
    op.drop_table("custom_field_values")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_contacts_team_custom_fields ON contacts "
            "USING gin (team_id, custom_fields jsonb_path_ops)"
        )
