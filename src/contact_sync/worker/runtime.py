"""Process-wide resources of a worker: the database engine."""

from __future__ import annotations

from sqlalchemy import Engine

from contact_sync.db.engine import make_engine
from contact_sync.settings import Settings

_engine: Engine | None = None


def get_engine(settings: Settings) -> Engine:
    """This process's engine, made on first use from the settings its app was built from."""
    global _engine
    if _engine is None:
        _engine = make_engine(settings.database_url, pool_size=2, pre_ping=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine inherited across a fork without closing the parent's sockets."""
    global _engine
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
