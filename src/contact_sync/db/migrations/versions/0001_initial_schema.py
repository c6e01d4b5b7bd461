"""Initial schema: teams, keys, companies, contacts, history, inbox, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from contact_sync.db.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(JSONB(), "postgresql")
STICKY = "('converted', 'customer', 'churned', 'do_not_contact')"


def upgrade() -> None:
    """Create every table; PostgreSQL also gets trigram and partial indexes."""
    is_pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "teams",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("default_region", sa.String(2), nullable=False, server_default="US"),
        sa.Column("calls_overwrite_people", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("min_confidence", sa.Float, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "team_id", sa.String(36), sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_api_keys_team_id", "api_keys", ["team_id"])
    op.create_table(
        "companies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "team_id", sa.String(36), sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_companies_team_id_name", "companies", ["team_id", "name"])
    op.create_table(
        "contacts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "team_id", sa.String(36), sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("company_id", sa.String(36), sa.ForeignKey("companies.id", ondelete="SET NULL")),
        sa.Column("first_name", sa.String(100), nullable=False),
        sa.Column("last_name", sa.String(100), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(16)),
        sa.Column("phone_secondary", sa.String(16)),
        sa.Column("job_title", sa.String(200)),
        sa.Column("lead_status", sa.String(64), nullable=False, server_default="new"),
        sa.Column("source", sa.String(100)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("preferred_contact_method", sa.String(32)),
        sa.Column("do_not_call", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("notes", sa.Text),
        sa.Column("custom_fields", JSON_DOC, nullable=False),
        sa.Column("tags", JSON_DOC, nullable=False),
        sa.Column("provenance", JSON_DOC, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    # Every list is scoped to a team and ordered newest first, then by id.
    order = [sa.text("created_at DESC"), sa.text("id DESC")]
    op.create_index("ix_contacts_team_created", "contacts", ["team_id", *order])
    op.create_index(
        "ix_contacts_team_company_created", "contacts", ["team_id", "company_id", *order]
    )
    op.create_index(
        "ix_contacts_team_status_created", "contacts", ["team_id", "lead_status", *order]
    )
    # Event resolution by the number called (either number of a contact).
    op.create_index("ix_contacts_team_phone", "contacts", ["team_id", "phone"])
    op.create_index("ix_contacts_team_phone_secondary", "contacts", ["team_id", "phone_secondary"])
    if is_pg:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_contacts_search_trgm ON contacts USING gin ("
            "lower(first_name || ' ' || last_name) gin_trgm_ops, "
            "lower(coalesce(email, '')) gin_trgm_ops, "
            "coalesce(phone, '') gin_trgm_ops, "
            "coalesce(phone_secondary, '') gin_trgm_ops)"
        )
        # The scheduler's stream: callable contacts of a team in keyset (id) order.
        op.execute(
            "CREATE INDEX ix_contacts_callable ON contacts (team_id, id) "
            f"WHERE do_not_call = false AND phone IS NOT NULL AND lead_status NOT IN {STICKY}"
        )
    else:
        op.create_index(
            "ix_contacts_callable",
            "contacts",
            ["team_id", "id"],
            sqlite_where=sa.text(
                f"do_not_call = 0 AND phone IS NOT NULL AND lead_status NOT IN {STICKY}"
            ),
        )
    op.create_table(
        "contact_history",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("contact_id", sa.String(36), nullable=False),
        sa.Column("team_id", sa.String(36), nullable=False),
        sa.Column("version_before", sa.Integer),
        sa.Column("version_after", sa.Integer, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(200)),
        sa.Column("call_id", sa.String(200)),
        sa.Column("api_key_id", sa.String(36)),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("changes", JSON_DOC, nullable=False),
        sa.Column("skipped", JSON_DOC, nullable=False),
        sa.Column("summary", sa.Text),
    )
    op.create_index("ix_contact_history_contact", "contact_history", ["contact_id", "id"])
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("team_id", sa.String(36)),
        sa.Column("contact_id", sa.String(36)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("processed_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_id", sa.String(200)),
        sa.Column("team_id", sa.String(36)),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("payload", JSON_DOC, nullable=False),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("replayed_at", UTCDateTime),
    )
    op.create_index("ix_dead_letters_event_id", "dead_letters", ["event_id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("message_key", sa.String(200), primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop everything (development only)."""
    for table in (
        "delivery_attempts",
        "dead_letters",
        "processed_events",
        "contact_history",
        "contacts",
        "companies",
        "api_keys",
        "teams",
    ):
        op.drop_table(table)
