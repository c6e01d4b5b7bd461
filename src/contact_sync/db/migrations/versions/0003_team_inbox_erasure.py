"""Inbox keyed by team and event id; erasure of dead letters; the suppression list.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

- ``processed_events``: the key becomes ``(team_id, event_id)`` (README, "The event path"):
  keyed by ``event_id`` alone, team A's ``evt-1`` made team B's ``evt-1`` a duplicate that
  was dropped. Round-1 rows keep working: a row without a team gets its contact's team;
  a row that still has none can only be the ``dead_lettered`` mark of a payload whose team
  could not be read, which no claim ever matched, and its dead letter keeps the event:
  it is removed (the key needs a team).
- ``dead_letters.erased_at``: set when the contact a letter named was deleted and its
  payload replaced by a tombstone; such a letter is never replayed. An index by team
  serves erasure, which reads a team's letters.
- ``teams.suppression_key`` and ``suppressions``: the keyed hashes of the numbers of
  deleted do-not-call contacts (``contact_sync.contacts.suppression``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from contact_sync.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_INBOX_COLUMNS = "team_id, event_id, contact_id, outcome, processed_at"


def _inbox_table(name: str, key: sa.PrimaryKeyConstraint) -> None:
    op.create_table(
        name,
        sa.Column("team_id", sa.String(36), nullable=len(key.columns) == 1),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("contact_id", sa.String(36)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("processed_at", UTCDateTime, nullable=False),
        key,
    )


def upgrade() -> None:
    """Rekey the inbox, add the erasure column and the suppression list."""
    is_pg = op.get_bind().dialect.name == "postgresql"
    op.execute(
        "UPDATE processed_events SET team_id = ("
        "SELECT contacts.team_id FROM contacts WHERE contacts.id = processed_events.contact_id"
        ") WHERE team_id IS NULL AND contact_id IS NOT NULL"
    )
    op.execute("DELETE FROM processed_events WHERE team_id IS NULL")
    if is_pg:
        # In place: one ALTER, no copy of what may be a large table.
        op.execute(
            "ALTER TABLE processed_events ALTER COLUMN team_id SET NOT NULL, "
            "DROP CONSTRAINT processed_events_pkey, "
            "ADD CONSTRAINT pk_processed_events PRIMARY KEY (team_id, event_id)"
        )
    else:
        # SQLite cannot change a primary key: copy into the new shape.
        _inbox_table(
            "processed_events_new",
            sa.PrimaryKeyConstraint("team_id", "event_id", name="pk_processed_events"),
        )
        op.execute(
            f"INSERT INTO processed_events_new ({_INBOX_COLUMNS}) "
            f"SELECT {_INBOX_COLUMNS} FROM processed_events"
        )
        op.drop_table("processed_events")
        op.rename_table("processed_events_new", "processed_events")

    # Plain ADD COLUMN on both backends: a batch rebuild of a table that others
    # reference would, on SQLite with foreign keys on, cascade its DROP.
    op.add_column("dead_letters", sa.Column("erased_at", UTCDateTime, nullable=True))
    op.create_index("ix_dead_letters_team", "dead_letters", ["team_id", "id"])

    op.add_column("teams", sa.Column("suppression_key", sa.String(64), nullable=True))
    op.create_table(
        "suppressions",
        sa.Column(
            "team_id", sa.String(36), sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("phone_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("team_id", "phone_hash", name="pk_suppressions"),
    )


def downgrade() -> None:
    """Back to 0002; refused while two teams hold the same event id (one key cannot)."""
    bind = op.get_bind()
    shared = bind.execute(
        sa.text(
            "SELECT event_id FROM processed_events GROUP BY event_id HAVING count(*) > 1 LIMIT 1"
        )
    ).scalar()
    if shared is not None:
        raise RuntimeError(
            f"cannot downgrade: event id {shared!r} is in the inbox of several teams"
        )
    op.drop_table("suppressions")
    op.execute("ALTER TABLE teams DROP COLUMN suppression_key")  # SQLite 3.35+ has it
    op.drop_index("ix_dead_letters_team", table_name="dead_letters")
    op.execute("ALTER TABLE dead_letters DROP COLUMN erased_at")
    if bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE processed_events DROP CONSTRAINT pk_processed_events, "
            "ALTER COLUMN team_id DROP NOT NULL, "
            "ADD CONSTRAINT processed_events_pkey PRIMARY KEY (event_id)"
        )
    else:
        _inbox_table("processed_events_old", sa.PrimaryKeyConstraint("event_id"))
        op.execute(
            f"INSERT INTO processed_events_old ({_INBOX_COLUMNS}) "
            f"SELECT {_INBOX_COLUMNS} FROM processed_events"
        )
        op.drop_table("processed_events")
        op.rename_table("processed_events_old", "processed_events")
