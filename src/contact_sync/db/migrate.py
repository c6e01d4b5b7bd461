"""Run the Alembic migrations shipped inside the package, and say where a database stands."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

EMPTY = "(empty)"


class UnknownRevision(Exception):
    """The database is at a revision this version of the package does not ship."""


def alembic_config(engine: Engine) -> Config:
    """An Alembic config that runs on ``engine`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", "contact_sync.db:migrations")
    config.attributes["engine"] = engine
    return config


def _scripts(engine: Engine) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(engine))


def head_revision(engine: Engine) -> str:
    """The revision this version of the package migrates to."""
    head = _scripts(engine).get_current_head()
    assert head is not None  # the package ships at least one migration
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None when it has no schema (never migrated)."""
    with engine.connect() as conn:
        revision: str | None = MigrationContext.configure(conn).get_current_revision()
    return revision


def label(engine: Engine, revision: str | None) -> str:
    """``0003_team_inbox_erasure`` for ``0003`` (its file's name), ``(empty)`` for None."""
    if revision is None:
        return EMPTY
    for script in _scripts(engine).walk_revisions():
        if script.revision == revision and script.path:
            return Path(script.path).stem
    return revision


def _known(engine: Engine, revision: str) -> bool:
    return any(script.revision == revision for script in _scripts(engine).walk_revisions())


def schema_problem(engine: Engine) -> str | None:
    """What keeps the package from using this database's schema, or None when it can.

    A database at a revision newer than the package knows is usable: migrations
    keep the previous version's code working, so a rolled-back release still runs.
    """
    revision = current_revision(engine)
    head = head_revision(engine)
    if revision is None:
        return "has no schema: run `contact-sync migrate`"
    if revision != head and _known(engine, revision):
        return (
            f"is at schema {label(engine, revision)}, this version needs "
            f"{label(engine, head)}: run `contact-sync migrate`"
        )
    return None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str, str]:
    """Create or upgrade the schema; running it twice changes nothing.

    Returns the labels of the revisions before and after. Raises
    ``UnknownRevision`` when the database is at a revision this version does
    not ship (a newer release migrated it), instead of Alembic's traceback.
    """
    before = current_revision(engine)
    if before is not None and not _known(engine, before):
        raise UnknownRevision(
            f"is at schema revision {before}, which this version of contact-sync does not "
            f"know (it ships up to {label(engine, head_revision(engine))}): a newer release "
            "migrated it; run that release"
        )
    command.upgrade(alembic_config(engine), revision)
    return label(engine, before), label(engine, current_revision(engine))
