"""Counting deliveries of messages that never finished (their worker died).

Redis keeps no delivery count, so it lives in the database. Only redelivered
messages pay for it: a first delivery touches nothing here.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contact_sync.clock import utcnow
from contact_sync.db.tables import delivery_attempts


def count_attempt(engine: Engine, message_key: str) -> int:
    """Record one more delivery of ``message_key`` (committed at once); returns the count.

    The first delivery was never counted, so a redelivery starts at 2.
    """
    now = utcnow()
    with engine.begin() as conn:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            insert(delivery_attempts)
            .values(message_key=message_key, attempts=2, updated_at=now)
            .on_conflict_do_update(
                index_elements=[delivery_attempts.c.message_key],
                set_={"attempts": delivery_attempts.c.attempts + 1, "updated_at": now},
            )
        )
        return int(
            conn.execute(
                select(delivery_attempts.c.attempts).where(
                    delivery_attempts.c.message_key == message_key
                )
            ).scalar_one()
        )


def forget(engine: Engine, message_key: str) -> None:
    """The message finished: drop its count."""
    with engine.begin() as conn:
        conn.execute(
            delete(delivery_attempts).where(delivery_attempts.c.message_key == message_key)
        )
