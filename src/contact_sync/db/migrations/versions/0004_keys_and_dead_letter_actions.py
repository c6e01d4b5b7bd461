"""Keys that can be managed, unique team names, dead letters closed by people.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

- ``api_keys``: ``name`` (optional, for people), ``scope`` (``write`` or ``read``; every
  key made before is ``write``, as it could write) and ``last_used_at`` (refreshed at most
  once a minute). ``revoked_at`` exists since 0001.
- ``teams.name_key``: ``contact_sync.accounts.teams.name_key(name)``, under a unique index, so that
  a second team named like a first one, in any case, is refused. **Existing duplicates are
  renamed, not refused**: the oldest team of each name keeps it and each later one gets
  `` (2)``, `` (3)``… appended (and a warning names it), so that the migration never stops a
  deploy; no id, key or row moves, and a rename is undone with one ``UPDATE`` if wanted.
- ``dead_letters``: ``discarded_at``/``discarded_by`` (closed by a person, never deleted),
  ``attempt_log`` (each delivery and replay with its outcome, reason and message; a letter
  of before starts with an empty log, which ``contact_sync.ops.dead_letters`` reads as the one
  delivery its columns describe), and an index for a team's letters newest first.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from contact_sync.accounts.teams import name_key
from contact_sync.db.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(JSONB(), "postgresql")
logger = logging.getLogger("alembic.runtime.migration")


def _unique_names(bind: sa.Connection) -> list[dict[str, str]]:
    """``name_key`` for every team; a later team whose name is taken gets a free `` (n)``."""
    rows = bind.execute(sa.text("SELECT id, name FROM teams ORDER BY created_at, id")).all()
    taken: set[str] = set()
    updates = []
    for team_id, name in rows:
        new_name, number = name, 1
        while name_key(new_name) in taken:
            number += 1
            suffix = f" ({number})"
            new_name = name[: 200 - len(suffix)] + suffix
        if new_name != name:
            logger.warning(
                "team %s renamed from %r to %r: team names are unique", team_id, name, new_name
            )
        taken.add(name_key(new_name))
        updates.append({"b_id": team_id, "b_name": new_name, "b_key": name_key(new_name)})
    return updates


def upgrade() -> None:
    """Add the key, team-name and dead-letter columns; rename duplicate team names."""
    bind = op.get_bind()
    is_pg = bind.dialect.name == "postgresql"

    op.add_column("teams", sa.Column("name_key", sa.String(64), nullable=True))
    updates = _unique_names(bind)
    if updates:
        bind.execute(
            sa.text("UPDATE teams SET name = :b_name, name_key = :b_key WHERE id = :b_id"), updates
        )
    if is_pg:  # SQLite cannot alter a column; every write goes through create_team
        op.execute("ALTER TABLE teams ALTER COLUMN name_key SET NOT NULL")
    op.create_index("ux_teams_name_key", "teams", ["name_key"], unique=True)

    # Plain ADD COLUMN on both backends (see 0003: no batch rebuild of referenced tables).
    op.add_column("api_keys", sa.Column("name", sa.String(100), nullable=True))
    op.add_column(
        "api_keys", sa.Column("scope", sa.String(8), nullable=False, server_default="write")
    )
    op.add_column("api_keys", sa.Column("last_used_at", UTCDateTime, nullable=True))

    op.add_column("dead_letters", sa.Column("discarded_at", UTCDateTime, nullable=True))
    op.add_column("dead_letters", sa.Column("discarded_by", sa.String(100), nullable=True))
    op.add_column(
        "dead_letters",
        sa.Column("attempt_log", JSON_DOC, nullable=False, server_default=sa.text("'[]'")),
    )
    op.create_index("ix_dead_letters_team_seen", "dead_letters", ["team_id", "last_seen_at", "id"])


def downgrade() -> None:
    """Back to 0003; refused while a usable read key exists (0003 would let it write).

    Discards are lost (such letters look open again) and renamed teams keep their
    new names.
    """
    bind = op.get_bind()
    readers = bind.execute(
        sa.text("SELECT count(*) FROM api_keys WHERE scope = 'read' AND revoked_at IS NULL")
    ).scalar()
    if readers:
        raise RuntimeError(
            f"cannot downgrade: {readers} read-only API keys would become able to write; "
            "revoke them first (contact-sync keys revoke KEY_ID)"
        )
    op.drop_index("ix_dead_letters_team_seen", table_name="dead_letters")
    for column in ("attempt_log", "discarded_by", "discarded_at"):
        op.execute(f"ALTER TABLE dead_letters DROP COLUMN {column}")  # SQLite 3.35+ has it
    for column in ("last_used_at", "scope", "name"):
        op.execute(f"ALTER TABLE api_keys DROP COLUMN {column}")
    op.drop_index("ux_teams_name_key", table_name="teams")
    op.execute("ALTER TABLE teams DROP COLUMN name_key")
