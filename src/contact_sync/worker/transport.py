"""kombu's Redis transport, without the window in which a taken message can vanish.

Stock kombu takes a message with ``BRPOP`` (the message leaves Redis) and
only then records it in the ``unacked`` hash. A worker that dies in between
loses it, and the window is wide: a worker killed with SIGKILL keeps its
socket open for the 10-30 ms its exit takes, and Redis answers the ``BRPOP``
it left waiting with the next message published, to a dead process. The
fault-injection harness (``bench/chaos.py``) lost events that way.

Here a consumer of a single queue takes messages with ``BLMOVE`` into an
in-transit list of its own (one per channel), and removes a message from
it in the same ``MULTI`` that records it as unacknowledged. Each channel
keeps a heartbeat key alive while it runs; any worker's periodic scan (the
one that restores messages past their visibility timeout) moves the
in-transit messages of a channel whose heartbeat expired back to the queue.
A message is thus always in the queue, in transit, or unacknowledged: at
worst it is delivered twice, which the inbox makes harmless.

Only priority 0 is read (the one list named after the queue), as
``docs/celery-message.md`` says; any other case falls back to stock kombu.

Stock kombu also spends three Redis round trips on every message (take,
record, acknowledge), which is most of Celery's per-message cost. Here,
once ``BLMOVE`` returns a message, the channel takes up to its free
prefetch slots more in one pipelined round trip, records all of them as
unacknowledged in one ``MULTI``, and, under the worker's event loop,
acknowledges in one round trip every message acknowledged in a loop turn.

Prefetch is bounded in bytes as well as in messages (``prefetch_bytes``):
the window that lets one-event messages form large groups would otherwise
hold hundreds of 500-event batch messages, decoded, in the main process.
"""

# kombu's annotations are partial: its calls are untyped, its attributes narrower than used.
# mypy: disable-error-code="no-untyped-call,assignment"

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

log = logging.getLogger("contact_sync.worker")

TRANSIT = "{queue}.transit.{channel}"
ALIVE_SUFFIX = ".alive"
# A channel's in-transit list is taken back this long after its last heartbeat.
TRANSIT_TTL_SECONDS = 30
# At most this many messages are taken in one round trip (never more than the free prefetch).
TAKE_MAX = 100


class QoS(kombu_redis.QoS):
    """Records taken messages as unacknowledged, and acknowledges them, in bulk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (delivery tag, unacked record, in-transit item) of messages handed
        # to the consumer but not yet recorded; they stay in transit until then.
        self._unrecorded: list[tuple[str, str, bytes]] = []
        self._acked: list[str] = []
        self._sizes: dict[str, int] = {}  # bytes of each unacknowledged message
        self._bytes = 0

    def can_consume(self) -> bool:
        # At least one message always fits, however large.
        return bool(super().can_consume()) and self._bytes < self.channel.prefetch_bytes

    def can_consume_max_estimate(self) -> int | None:
        if self._bytes >= self.channel.prefetch_bytes:
            return 0
        return super().can_consume_max_estimate()  # type: ignore[no-any-return]

    def _held(self, delivery_tag: str, size: int) -> None:
        self._sizes[delivery_tag] = size
        self._bytes += size

    def _released(self, delivery_tag: str) -> None:
        self._bytes -= self._sizes.pop(delivery_tag, 0)

    def append(self, message: Any, delivery_tag: str) -> None:
        channel: Channel = self.channel
        item, queue = channel._transit_item, channel._transit_queue
        if item is None or queue is None:
            super().append(message, delivery_tag)
            return
        self._held(delivery_tag, len(item))
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        self._unrecorded.append((delivery_tag, raw, item))
        channel._transit_item = None
        virtual.QoS.append(self, message, delivery_tag)
        if not channel._taking:
            self.record_taken()

    def record_taken(self) -> None:
        """Move the messages handed out since the last call from transit to unacked, atomically."""
        if not self._unrecorded:
            return
        taken, self._unrecorded = self._unrecorded, []
        channel: Channel = self.channel
        transit = channel.transit_key(channel._transit_queue or "")
        now = time.time()
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {tag: now for tag, _, _ in taken})
            pipe.hset(self.unacked_key, mapping={tag: raw for tag, raw, _ in taken})
            for _, _, item in taken:
                pipe.lrem(transit, 1, item)
            pipe.execute()

    def ack(self, delivery_tag: str) -> None:
        self.record_taken()
        self._released(delivery_tag)
        if not self.channel.connection.acks_per_turn:
            super().ack(delivery_tag)
            return
        # Written at the end of this event-loop turn (MultiChannelPoller.on_poll_start);
        # the prefetch slot is free at once.
        self._acked.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def flush_acks(self) -> None:
        """Remove this turn's acknowledged messages from Redis in one round trip.

        If Redis is away the removals are lost, and those messages come back
        after the visibility timeout: a duplicate delivery, which the inbox
        absorbs, exactly as when stock kombu fails to acknowledge.
        """
        if not self._acked:
            return
        self.record_taken()
        tags, self._acked = self._acked, []
        try:
            with self.pipe_or_acquire() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        except self.channel.connection_errors:
            log.warning("acknowledgements not written; redelivery absorbed", exc_info=True)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.record_taken()
        self._released(delivery_tag)
        super().reject(delivery_tag, requeue)

    def restore_unacked(self, client: Any = None) -> None:
        """Put this channel's unacknowledged messages back in the queue (kombu, at close).

        When Redis is gone this cannot be done here: the messages stay in
        the unacked hash, or in transit, and come back after the visibility
        timeout or the transit heartbeat. kombu let that failure escape from
        ``close`` (an ``AttributeError`` once its pools were dropped), and
        Celery then stopped the worker on Redis restarts.
        """
        try:
            self.record_taken()
            super().restore_unacked(client)
        except (*self.channel.connection_errors, AttributeError):
            log.warning(
                "unacknowledged messages not restored at close; Redis redelivers them later",
                extra={"messages": len(self._delivered)},
            )
            self._delivered.clear()
        finally:
            self._sizes.clear()
            self._bytes = 0

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        super().restore_visible(*args, **kwargs)
        self.channel.reclaim_orphans()


class Channel(kombu_redis.Channel):
    """A Redis channel that takes messages into an in-transit list of its own."""

    QoS = QoS
    # Settable with the broker transport option of the same name.
    prefetch_bytes = 8 * 1024 * 1024
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "prefetch_bytes")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._transit_id = uuid.uuid4().hex
        self._transit_item: bytes | None = None
        self._transit_queue: str | None = None
        self._heartbeat_at = 0.0
        self._taking = False
        super().__init__(*args, **kwargs)

    def transit_key(self, queue: str) -> str:
        return TRANSIT.format(queue=queue, channel=self._transit_id)

    def _single_queue(self) -> str | None:
        queues = list(self.active_queues)
        if len(queues) != 1 or self.global_keyprefix:
            return None
        return str(queues[0])

    def _heartbeat(self, queue: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._heartbeat_at < TRANSIT_TTL_SECONDS / 3:
            return
        with self.conn_or_acquire() as client:
            client.set(self.transit_key(queue) + ALIVE_SUFFIX, 1, ex=TRANSIT_TTL_SECONDS)
        self._heartbeat_at = now

    def _brpop_start(self, timeout: float | None = None) -> None:
        queue = self._single_queue()
        self._transit_queue = queue
        if queue is None:
            super()._brpop_start(timeout)
            return
        if timeout is None:
            timeout = self.brpop_timeout
        self._heartbeat(queue)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command(
            "BLMOVE", queue, self.transit_key(queue), "RIGHT", "LEFT", timeout or 0
        )

    def _brpop_read(self, **options: Any) -> bool:
        queue = self._transit_queue
        if queue is None:
            return bool(super()._brpop_read(**options))
        try:
            try:
                first = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not first:
                raise Empty()
            items = [first, *self._take_more(queue, first)]
            failure: Exception | None = None
            self._taking = True
            try:
                for item in items:
                    try:
                        self._deliver_taken(queue, item)
                    except Exception as error:
                        failure = failure or error
            finally:
                self._taking = False
                self.qos.record_taken()
            if failure is not None:
                raise failure
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _take_more(self, queue: str, first: bytes) -> list[bytes]:
        """Move up to the free prefetch slots (less the one taken) into transit, in one trip."""
        free = self.qos.can_consume_max_estimate()
        count = min(TAKE_MAX if free is None else free, TAKE_MAX) - 1
        # As many more as fit the byte budget, if they are the size of the first.
        room = self.prefetch_bytes - self.qos._bytes - len(first)
        count = min(count, max(0, room) // max(1, len(first)))
        if count <= 0:
            return []
        try:
            with self.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                for _ in range(count):
                    pipe.lmove(queue, self.transit_key(queue), "RIGHT", "LEFT")
                return [item for item in pipe.execute() if item is not None]
        except self.connection_errors:
            # Any that moved stay in transit and are taken back with this channel.
            log.warning("could not take more messages at once", exc_info=True)
            return []

    def _deliver_taken(self, queue: str, item: bytes) -> None:
        """Hand one in-transit message to the consumer (which records it, or not)."""
        try:
            payload = loads(bytes_to_str(item))
        except Exception:
            self._drop_transit(queue, item)  # as stock kombu: an unreadable envelope
            raise
        self._transit_item = item
        try:
            self.connection._deliver(payload, queue)
        except Exception as error:
            if self._transit_item is not None and not isinstance(error, self.connection_errors):
                # Not recorded, and not for want of the broker: give it up as stock kombu
                # does, rather than take it back and fail on it for ever. (For want of the
                # broker it stays in transit: taken back once this channel is gone.)
                with contextlib.suppress(Exception):
                    self._drop_transit(queue, item)
            raise
        finally:
            pending, self._transit_item = self._transit_item, None
        if pending is not None:  # taken by a consumer that does not acknowledge
            self._drop_transit(queue, item)

    def close(self) -> None:
        # kombu restores what is unacknowledged at close: it must be recorded first.
        with contextlib.suppress(Exception):
            self.qos.flush_acks()
            self.qos.record_taken()
        # Restored now, while this channel still has its connection pool:
        # stock kombu drops the pools first and then cannot reach Redis.
        self.qos.restore_unacked_once()
        super().close()

    def _poll_error(self, type: str, **options: Any) -> Any:
        if type == "BRPOP" and self._transit_queue is not None:
            return self.client.parse_response(self.client.connection, "BLMOVE")
        return super()._poll_error(type, **options)

    def _drop_transit(self, queue: str, item: bytes) -> None:
        with self.conn_or_acquire() as client:
            client.lrem(self.transit_key(queue), 1, item)

    def reclaim_orphans(self) -> int:
        """Move messages left in transit by dead channels back to the queue; returns how many."""
        queue = self._single_queue()
        if queue is None:
            return 0
        moved = 0
        try:
            self._heartbeat(queue, force=True)
            with self.conn_or_acquire() as client:
                pattern = TRANSIT.format(queue=queue, channel="*")
                for raw_key in client.scan_iter(match=pattern, count=200):
                    key = bytes_to_str(raw_key)
                    if key.endswith(ALIVE_SUFFIX) or client.exists(key + ALIVE_SUFFIX):
                        continue
                    # Back to the end that consumers take from: these go next.
                    while client.lmove(key, queue, "RIGHT", "RIGHT") is not None:
                        moved += 1
        except self.connection_errors:
            return moved  # the broker is away; the next scan does it
        if moved:
            log.warning(
                "messages a dead consumer had taken went back to the queue",
                extra={"queue": queue, "messages": moved},
            )
        return moved


class MultiChannelPoller(kombu_redis.MultiChannelPoller):
    """Writes the acknowledgements of a loop turn before polling again."""

    def on_poll_start(self) -> None:
        for channel in self._channels:
            if isinstance(channel, Channel):
                channel.qos.flush_acks()
        super().on_poll_start()


class Transport(kombu_redis.Transport):
    """``redis://`` with :class:`Channel`."""

    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = MultiChannelPoller()
        # Only under an event loop is there a turn's end at which to write acks.
        self.acks_per_turn = False

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.acks_per_turn = True
        super().register_with_event_loop(connection, loop)
