"""Migration 0012: the contact's calls index carries what the attempt rules read."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect, text

from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import alembic_config, upgrade
from tests.test_inbox_per_team import blank_url  # noqa: F401 (a fixture, used by name)

INCLUDED = "INCLUDE (team_id, direction, outcome)"


def _index(engine: Engine) -> tuple[list[str], str]:
    """The key columns of ``ix_calls_contact_ended`` and, on PostgreSQL, its definition."""
    indexes = inspect(engine).get_indexes("calls")
    [found] = [index for index in indexes if index["name"] == "ix_calls_contact_ended"]
    definition = ""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            definition = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_calls_contact_ended'")
            ).scalar_one()
    return [str(column) for column in found["column_names"]], definition


def test_migration_0012_covers_the_recent_calls_read_and_goes_back_and_forth(
    blank_url: str,  # noqa: F811 (the fixture imported above)
) -> None:
    engine = make_engine(blank_url)
    postgres = engine.dialect.name == "postgresql"
    try:
        upgrade(engine)
        columns, definition = _index(engine)
        assert columns[:3] == ["contact_id", "ended_at", "id"]  # the calls list's order
        assert (INCLUDED in definition) == postgres
        command.downgrade(alembic_config(engine), "0011")
        columns, definition = _index(engine)
        assert columns == ["contact_id", "ended_at", "id"]
        assert INCLUDED not in definition
        upgrade(engine)
        assert (INCLUDED in _index(engine)[1]) == postgres
    finally:
        engine.dispose()
