"""The tables, as SQLAlchemy Core objects for queries.

The schema itself is created by the Alembic migrations in ``migrations/``;
this module mirrors it for building statements and must be kept in step.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from contact_sync.db.types import JsonDocument, UTCDateTime

metadata = MetaData()

teams = Table(
    "teams",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    # teams.name_key(name): unique, so that names differing only in case are refused.
    Column("name_key", String(64), nullable=False, unique=True),
    Column("default_region", String(2), nullable=False),
    Column("calls_overwrite_people", Boolean, nullable=False),
    Column("min_confidence", Float, nullable=True),
    # Custom-field keys without a definition: "accept" (stored untyped) or "reject".
    Column("undefined_custom_fields", String(8), nullable=False, server_default="accept"),
    # Two contacts with one number: "allow" or "reject" (docs/design.md §14).
    Column("duplicate_phones", String(8), nullable=False, server_default="allow"),
    Column("created_at", UTCDateTime, nullable=False),
    # The team's secret for suppression hashes (suppression.py); made on first use.
    Column("suppression_key", String(64), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("team_id", String(36), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("name", String(100), nullable=True),
    Column("scope", String(8), nullable=False),  # "read" or "write"
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),  # at most a minute stale
    Column("revoked_at", UTCDateTime, nullable=True),
)

companies = Table(
    "companies",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("team_id", String(36), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("team_id", String(36), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("company_id", String(36), ForeignKey("companies.id", ondelete="SET NULL")),
    Column("first_name", String(100), nullable=False),
    Column("last_name", String(100), nullable=False),
    Column("email", String(320)),
    Column("phone", String(16)),
    Column("phone_secondary", String(16)),
    Column("job_title", String(200)),
    Column("lead_status", String(64), nullable=False),
    Column("source", String(100)),
    Column("timezone", String(64)),
    Column("preferred_contact_method", String(32)),
    Column("do_not_call", Boolean, nullable=False),
    Column("notes", Text),
    Column("custom_fields", JsonDocument, nullable=False),
    Column("tags", JsonDocument, nullable=False),
    Column("provenance", JsonDocument, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Read-only, from the calls ledger; kept by the event apply, not versioned.
    Column("call_count", Integer, nullable=False, server_default="0"),
    Column("last_called_at", UTCDateTime),
    Column("last_call_outcome", String(16)),
    # Internal, from the ledger: the contact's outbound calls, ever (the stream's caps).
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    # What the primary number says (scheduling/numbers.py); kept by the contact writer.
    Column("phone_zone", String(64)),
    Column("phone_state", String(2)),
)

# The typed side table of the ``cf.`` filters (docs/design.md §13, contacts/field_values.py):
# one row per value of a contact's custom_fields, kept by the contact writer.
custom_field_values = Table(
    "custom_field_values",
    metadata,
    # No foreign keys (their check per inserted row costs the worker): the writer deletes
    # a contact's rows with the contact.
    Column("team_id", String(36), nullable=False),
    Column("contact_id", String(36), nullable=False),
    Column("key", String(64), nullable=False),
    Column("kind", String(1), nullable=False),
    Column("num", Numeric, nullable=True),
    # Byte order on PostgreSQL ("C"): canonical dates and date-times compare as times.
    Column("txt", Text().with_variant(Text(collation="C"), "postgresql"), nullable=True),
)

contact_history = Table(
    "contact_history",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("contact_id", String(36), nullable=False),
    Column("team_id", String(36), nullable=False),
    Column("version_before", Integer),
    Column("version_after", Integer, nullable=False),
    Column("source", String(16), nullable=False),
    Column("event_id", String(200)),
    Column("call_id", String(200)),
    Column("api_key_id", String(36)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("changes", JsonDocument, nullable=False),
    Column("skipped", JsonDocument, nullable=False),
    Column("summary", Text),
)

# The ledger of calls (docs/design.md §11): one row per (team, call_id).
calls = Table(
    "calls",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("team_id", String(36), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("contact_id", String(36), ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("call_id", String(200), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("campaign_id", String(200)),
    Column("direction", String(8), nullable=False),  # "outbound" or "inbound"
    Column("outcome", String(16), nullable=False),
    Column("duration_seconds", Integer),
    Column("started_at", UTCDateTime),
    Column("ended_at", UTCDateTime, nullable=False),
    Column("phone", String(16)),
    Column("summary", Text),
    Column("recorded_at", UTCDateTime, nullable=False),
    UniqueConstraint("team_id", "call_id", name="ux_calls_team_call"),
)

# A team's calling policy (docs/design.md §12); no row means the defaults.
calling_policies = Table(
    "calling_policies",
    metadata,
    Column("team_id", String(36), ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("policy", JsonDocument, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(100)),  # the key's id, or "cli:<user>"
)

calling_policy_changes = Table(
    "calling_policy_changes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("team_id", String(36), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("changed_by", String(100)),
    Column("old", JsonDocument, nullable=False),
    Column("new", JsonDocument, nullable=False),
)

# A team's custom-field definitions (docs/design.md §13); ``spec`` holds the
# constraints (options, min, max, pattern) as fields/definitions.py writes them.
custom_field_definitions = Table(
    "custom_field_definitions",
    metadata,
    Column("team_id", String(36), ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("label", String(100), nullable=False),
    Column("type", String(16), nullable=False),
    Column("description", Text),
    Column("spec", JsonDocument, nullable=False),
    Column("ai_extractable", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Keyed by team and event id: one team's id never swallows another team's event.
processed_events = Table(
    "processed_events",
    metadata,
    Column("team_id", String(36), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("contact_id", String(36)),
    Column("outcome", String(16), nullable=False),
    Column("processed_at", UTCDateTime, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_id", String(200)),
    Column("team_id", String(36)),
    Column("reason", String(40), nullable=False),
    Column("message", Text, nullable=False),
    Column("payload", JsonDocument, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("replayed_at", UTCDateTime),
    # Set when the contact the letter named was deleted: the payload is a tombstone.
    Column("erased_at", UTCDateTime),
    # Closed by a person without applying it: when, and who (a key id, or "cli:<user>").
    Column("discarded_at", UTCDateTime),
    Column("discarded_by", String(100)),
    # Each delivery and replay: [{at, via, outcome, reason, message, by}] (dead_letters.py).
    Column("attempt_log", JsonDocument, nullable=False),
)

# Numbers of deleted do-not-call contacts, as keyed hashes only (suppression.py).
suppressions = Table(
    "suppressions",
    metadata,
    Column(
        "team_id",
        String(36),
        ForeignKey("teams.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("phone_hash", String(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Redis keeps no delivery count, so the count of deliveries that never
# finished (the worker died mid-task) lives here, keyed by message.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("message_key", String(200), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
