"""Which errors are worth retrying: the one place that decides.

Transient: the database is unreachable, a connection dropped, or a
transaction lost a conflict (serialization failure, deadlock, SQLite busy).
Retrying those succeeds once the cause passes, so they never dead-letter.
Anything else raised while applying is a bug or data the database refuses:
retrying cannot help, so the message is parked as ``poison_message``.
"""

from __future__ import annotations

import random

from sqlalchemy import exc as sa_exc

TRANSIENT = (
    # connection refused or lost, serialization failure, deadlock, "database is locked"
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # pool exhausted
)


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same work later may succeed."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, TRANSIENT)


def backoff_seconds(retries: int, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter: spreads retries of a crowd of workers."""
    return float(random.uniform(0.5, 1.0) * min(cap, 0.5 * 2**retries))
