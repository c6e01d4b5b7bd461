"""Counting deliveries of messages that never finished (their worker died).

Redis keeps no delivery count, so it lives in the database. Only redelivered
messages pay for it: a first delivery touches nothing here.

RabbitMQ's quorum queue counts them itself: a redelivered message carries the
count in its headers, read here, and the database is not involved.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contact_sync.clock import utcnow
from contact_sync.db.tables import delivery_attempts
from contact_sync.worker.celery_app import DELIVERY_LIMIT, POISON_QUEUE


def poison_text(limit: int) -> str:
    """The dead letter's message for a message that killed its worker ``limit`` times."""
    return (
        f"message was delivered more than {limit} times without finishing "
        "(its worker died each time)"
    )


def count_attempt(conn: Connection, *, message_key: str) -> int:
    """Record one more delivery of ``message_key``; returns the count.

    The first delivery was never counted, so a redelivery starts at 2. The
    caller commits it at once, in a unit of its own: a count that rolled back
    with the work it guards could never reach the limit.
    """
    now = utcnow()
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


def forget(conn: Connection, *, message_key: str) -> None:
    """The message finished: drop its count."""
    conn.execute(delete(delivery_attempts).where(delivery_attempts.c.message_key == message_key))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def broker_deliveries(delivery_info: Any, headers: Any) -> int:
    """How many times RabbitMQ has delivered this message, this delivery included.

    A quorum queue adds ``x-delivery-count`` (how often the message came
    back) to a redelivered message. RabbitMQ 4.3 counts only failed
    deliveries there and every return in ``x-acquired-count``: the larger
    counts. On a first delivery such headers can only come from the
    publisher, and are ignored.
    """
    if not (delivery_info or {}).get("redelivered"):
        return 1
    headers = headers if isinstance(headers, dict) else {}
    returned = max(_count(headers.get("x-delivery-count")), _count(headers.get("x-acquired-count")))
    return returned + 1


def broker_poison_reason(delivery_info: Any, headers: Any, limit: int) -> str | None:
    """Why a RabbitMQ delivery is poison (to be parked, not run), or None.

    Poison is what came back more than ``limit`` times, as on Redis, and
    whatever the broker dead-lettered into the poison queue after
    ``DELIVERY_LIMIT`` returns, whatever the reason it never got here first.
    """
    if (delivery_info or {}).get("routing_key") == POISON_QUEUE:
        headers = headers if isinstance(headers, dict) else {}
        reason = headers.get("x-first-death-reason") or "unknown reason"
        return (
            f"the broker dead-lettered the message ({reason}) after more than "
            f"{DELIVERY_LIMIT} deliveries without an acknowledgement"
        )
    if broker_deliveries(delivery_info, headers) > limit:
        return poison_text(limit)
    return None
