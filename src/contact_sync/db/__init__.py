"""Persistence: tables, engine and the Alembic migrations that build them."""
