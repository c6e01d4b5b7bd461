"""Process-wide resources of a worker: the database engine, and the garbage collector's settings."""

from __future__ import annotations

import gc

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


# Objects allocated (net) between two collections of the youngest generation. Python's 700
# made ~140 collections a 1,000 events, each walking the batch's young objects (events,
# changes, rows) that reference counting frees anyway; 20,000 makes ~4 and cut the apply's
# CPU by about a tenth (bench/profile_apply.py; README, Performance).
YOUNG_THRESHOLD = 20_000


def settle_collector() -> None:
    """Set the collector up for applying events, once start-up is done.

    What the modules and the app built stays for the process's life: frozen
    out of the collector's generations, it is not walked again by every full
    collection (the collector was about a third of an event's CPU). Young
    collections are made rarer (``YOUNG_THRESHOLD``); the older generations
    keep Python's ratios.
    """
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
