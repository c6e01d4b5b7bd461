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
worst it is delivered twice, which the inbox makes harmless. What goes back
to the queue that way was (or may have been) handed to a consumer, so it is
marked redelivered as kombu marks the messages it restores: the poison
counter (``tasks.redelivered``) counts it. A live channel's in-transit items
go back too once they have sat there longer than ``TRANSIT_STALE_SECONDS``
(a healthy channel moves them out in milliseconds; a connection error can
leave them behind), and a closing channel gives back at once what its
pending ``BLMOVE`` took.

Anything at all can be pushed on the queue list by a publisher. An entry
that is not a kombu envelope (``read_entry`` says why) is handed to the
consumer as a message of its own, with no task and the entry's bytes as its
body, which ``worker/consumer.py`` parks as a dead letter: it is recorded as
unacknowledged like any message, so it is never lost while being parked,
and never stops or traps the worker.

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
A message counts as the larger of its queue entry and its body as kombu
decoded it (what the main process holds): a compressed body would count
inflated, had the consumer not refused to inflate it (worker/consumer.py).
"""

# kombu's annotations are partial: its calls are untyped, its attributes narrower than used.
# mypy: disable-error-code="no-untyped-call,assignment"

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from queue import Empty
from typing import Any, cast

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import WatchError

log = logging.getLogger("contact_sync.worker")

TRANSIT = "{queue}.transit.{channel}"
ALIVE_SUFFIX = ".alive"
# A channel's in-transit list is taken back this long after its last heartbeat.
TRANSIT_TTL_SECONDS = 30
# A live channel's in-transit item is given back once it has sat there this long.
TRANSIT_STALE_SECONDS = 60
# At most this many messages are taken in one round trip (never more than the free prefetch).
TAKE_MAX = 100
# The content type of the message an entry that is not an envelope becomes. The worker
# accepts JSON only, so Celery's consumer cannot decode it and parks it (on_decode_error).
MALFORMED_CONTENT_TYPE = "application/x-malformed-queue-entry"


@dataclass(frozen=True)
class Malformed:
    """A queue entry that is not a kombu envelope, and why."""

    reason: str


_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}


def _kind(mapping: dict[str, Any], key: str) -> str:
    """What ``mapping[key]`` is, in words, for a dead letter's reason."""
    if key not in mapping:
        return "missing"
    value = mapping[key]
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _KINDS.get(type(value), type(value).__name__)


def read_entry(item: bytes) -> dict[str, Any] | Malformed:
    """The envelope in a raw queue entry, or why there is none; never raises.

    An envelope is what kombu makes a message of, records and restores
    without failing: a JSON object with a string ``body`` (valid base64 when
    ``properties.body_encoding`` says so), ``headers`` an object and the
    content type and encoding strings when given, and ``properties`` an
    object with a non-empty string ``delivery_tag`` and an object
    ``delivery_info``. Its priority is set to 0: it was taken from the
    priority-0 list, and kombu restores a message to the list of the
    priority it names, which this worker would never read.
    """
    try:
        payload = loads(item)  # kombu's own reader: strict UTF-8, its type markers
    except UnicodeDecodeError:
        return Malformed("not UTF-8")
    except Exception as error:  # ValueError, RecursionError, a bad type marker ...
        return Malformed(f"not JSON ({type(error).__name__})")
    if not isinstance(payload, dict):
        return Malformed(f"{_kind({'entry': payload}, 'entry')}, not an envelope object")
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return Malformed(f"properties is {_kind(payload, 'properties')}, not an object")
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        kind = _kind(properties, "delivery_tag")
        return Malformed(f"properties.delivery_tag is {kind}, not a non-empty string")
    if not isinstance(properties.get("delivery_info"), dict):
        kind = _kind(properties, "delivery_info")
        return Malformed(f"properties.delivery_info is {kind}, not an object")
    body = payload.get("body")
    if not isinstance(body, str):
        return Malformed(f"body is {_kind(payload, 'body')}, not a string")
    for field in ("content-type", "content-encoding"):
        if not isinstance(payload.get(field), str | None):
            return Malformed(f"{field} is {_kind(payload, field)}, not a string")
    if not isinstance(payload.get("headers"), dict | None):
        return Malformed(f"headers is {_kind(payload, 'headers')}, not an object")
    encoding = properties.get("body_encoding")
    if not isinstance(encoding, str | None):
        kind = _kind(properties, "body_encoding")
        return Malformed(f"properties.body_encoding is {kind}, not a string")
    if encoding is not None and encoding.lower() != "utf-8":
        if encoding != "base64":  # the one codec kombu has
            return Malformed(f"properties.body_encoding {encoding[:40]!r} is not base64")
        try:
            base64.b64decode(body.encode())  # as kombu decodes it
        except (binascii.Error, ValueError):  # bad padding, or a lone surrogate in the string
            return Malformed("body is not valid base64")
    priority = properties.get("priority")
    # Compared by type first: kombu's reader makes Decimal('sNaN') of a marker, and it raises.
    if priority is not None and not (type(priority) is int and priority == 0):
        properties["priority"] = 0
    return payload


def malformed_envelope(item: bytes, reason: str, queue: str) -> dict[str, Any]:
    """A well-formed message carrying ``item`` as its body: no task, a type no one decodes."""
    return {
        "body": base64.b64encode(item).decode("ascii"),
        "content-encoding": "binary",
        "content-type": MALFORMED_CONTENT_TYPE,
        "headers": {"malformed": reason},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "delivery_mode": 2,
            "priority": 0,
        },
    }


def redelivered_entry(item: bytes) -> bytes | str:
    """``item`` marked redelivered as kombu marks what it restores; a malformed one unchanged."""
    payload = read_entry(item)
    if isinstance(payload, Malformed):
        return item
    if isinstance(payload.get("headers"), dict):
        payload["headers"]["redelivered"] = True
    payload["properties"]["delivery_info"]["redelivered"] = True
    return str(dumps(payload))


def _decoded_size(message: Any) -> int:
    """The length of a message's body as kombu decoded it (base64, any compression)."""
    body = getattr(message, "body", None)
    return len(body) if isinstance(body, bytes | str) else 0


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
        self._held(delivery_tag, max(len(item), _decoded_size(message)))
        # Restored (by kombu) to the queue it was taken from, whatever routing it names.
        raw = dumps([message._raw, "", queue])
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

    def _closed(self, delivery_tag: str) -> bool:
        """Whether this channel is closed: it restored its messages then, this one too.

        Celery closes a channel whose connection was lost, and a task that
        ends later acknowledges (or rejects) its message on it; kombu then
        fails for want of a connection, and Celery stopped the worker
        ("Unrecoverable error"). The message is back in the queue (or comes
        back after the visibility timeout): its repeat is absorbed.
        """
        if self.channel.connection is not None:
            return False
        self._released(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)
        return True

    def ack(self, delivery_tag: str) -> None:
        if self._closed(delivery_tag):
            return
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
        if self._closed(delivery_tag):
            return
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
    transit_stale_seconds: float = TRANSIT_STALE_SECONDS
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "prefetch_bytes")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._transit_id = uuid.uuid4().hex
        self._transit_item: bytes | None = None
        self._transit_queue: str | None = None
        self._heartbeat_at = 0.0
        self._taking = False
        # In-transit items seen by this channel's scans: list key -> item digest -> first seen.
        self._transit_seen: dict[str, dict[bytes, float]] = {}
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
            if first is None:  # timed out (an empty entry is b"")
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
            self._flush_brpop_reauth()  # the connection is idle: kombu's moment to re-authenticate

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
        """Hand one in-transit entry to the consumer (which records it, or not)."""
        entry = read_entry(item)
        if isinstance(entry, Malformed):
            log.warning(
                "a queue entry that is not a message is handed over to be parked",
                extra={"queue": queue, "reason": entry.reason, "bytes": len(item)},
            )
            entry = malformed_envelope(item, entry.reason, queue)
        for attempt in (1, 2):
            self._transit_item = item
            try:
                self.connection._deliver(entry, queue)
                break
            except Exception as error:
                recorded = self._transit_item is None
                if attempt == 2 or recorded or isinstance(error, self.connection_errors):
                    raise  # recorded, or in transit until this channel or its age gives it back
                # kombu could not make a message of it after all: parked rather than
                # dropped, or taken back and failed on for ever.
                reason = f"kombu could not deliver it: {error!r}"[:500]
                log.warning("a queue entry is handed over to be parked", extra={"reason": reason})
                entry = malformed_envelope(item, reason, queue)
            finally:
                pending, self._transit_item = self._transit_item, None
        if pending is not None:  # taken by a consumer that does not acknowledge
            self._drop_transit(queue, item)

    def close(self) -> None:
        # kombu restores what is unacknowledged at close: it must be recorded first.
        with contextlib.suppress(Exception):
            self.qos.flush_acks()
            self.qos.record_taken()
        self._give_back_transit()
        # Restored now, while this channel still has its connection pool:
        # stock kombu drops the pools first and then cannot reach Redis.
        self.qos.restore_unacked_once()
        super().close()

    def _give_back_transit(self) -> None:
        """Before closing: read a pending take's reply, and return the in-transit list to the queue.

        Stock kombu reads a pending reply at close and delivers it, after this
        channel restored its unacknowledged messages (kombu's
        ``restore_unacked_once`` then failed on the newcomer, an
        ``AssertionError``, and the message waited out the visibility
        timeout). What the pending ``BLMOVE`` took goes back to the consuming
        end of the queue at once, unmarked: no consumer saw it.
        """
        queue, connection = self._transit_queue, cast(Any, self._in_poll)
        if not connection:
            return
        if queue is None:  # stock kombu's BRPOP: read (and deliver) it before restoring
            with contextlib.suppress(Empty, *self.connection_errors):
                self._brpop_read()
            return
        self._in_poll = None
        try:
            # A live server answers within the take's own timeout.
            if connection.can_read(timeout=(self.brpop_timeout or 1) + 1):
                self.client.parse_response(connection, "BLMOVE")
            else:
                connection.disconnect()
            transit = self.transit_key(queue)
            with self.conn_or_acquire() as client:
                while client.lmove(transit, queue, "RIGHT", "RIGHT") is not None:
                    pass
                client.delete(transit + ALIVE_SUFFIX)
        except Exception:  # no Redis: what it took comes back once the heartbeat lapses
            log.warning("a closing channel could not give back its taken messages", exc_info=True)

    def _drop_transit(self, queue: str, item: bytes) -> None:
        with self.conn_or_acquire() as client:
            client.lrem(self.transit_key(queue), 1, item)

    def reclaim_orphans(self) -> int:
        """Give back to the queue what sits in transit for no reason; returns how many.

        All of a dead channel's list (its heartbeat lapsed), and the items of
        a live channel's list that this channel's scans have seen there for
        ``transit_stale_seconds``. Each goes back marked redelivered.
        """
        queue = self._single_queue()
        if queue is None:
            return 0
        orphans = stale = 0
        now = time.monotonic()
        seen_before, self._transit_seen = self._transit_seen, {}
        try:
            self._heartbeat(queue, force=True)
            with self.conn_or_acquire() as client:
                pattern = TRANSIT.format(queue=queue, channel="*")
                for raw_key in client.scan_iter(match=pattern, count=200):
                    key = bytes_to_str(raw_key)
                    if key.endswith(ALIVE_SUFFIX):
                        continue
                    if not client.exists(key + ALIVE_SUFFIX):
                        while self._give_back_oldest(client, key, queue):
                            orphans += 1
                    else:
                        stale += self._give_back_stale(client, key, queue, seen_before, now)
        except self.connection_errors:
            self._transit_seen = {**seen_before, **self._transit_seen}
            # The broker is away; the next scan does the rest.
        for moved, message in (
            (orphans, "messages a dead consumer had taken went back to the queue"),
            (stale, "messages a live consumer left in transit went back to the queue"),
        ):
            if moved:
                log.warning(message, extra={"queue": queue, "messages": moved})
        return orphans + stale

    def _give_back_stale(
        self,
        client: Any,
        key: str,
        queue: str,
        seen_before: dict[str, dict[bytes, float]],
        now: float,
    ) -> int:
        """Give back the oldest items of a live channel's list seen long enough ago."""
        items = client.lrange(key, 0, -1)  # the newest first
        if not items:
            return 0
        noted = seen_before.get(key, {})
        digests = [hashlib.blake2b(item, digest_size=16).digest() for item in items]
        seen = self._transit_seen[key] = {d: noted.get(d, now) for d in digests}
        moved = 0
        # Items entered on the left: the oldest is last.
        for item, digest in zip(reversed(items), reversed(digests), strict=True):
            if now - seen[digest] < self.transit_stale_seconds:
                break  # this one, and every newer one, may still be on its way
            if not self._give_back_oldest(client, key, queue, expected=item):
                break
            moved += 1
        return moved

    def _give_back_oldest(
        self, client: Any, key: str, queue: str, expected: bytes | None = None
    ) -> bool:
        """Move the oldest item of ``key`` (if ``expected``) to the consuming end of ``queue``.

        Marked redelivered, atomically: the list is watched between reading
        the item and moving it, so an item its owner recorded meanwhile is
        not given back.
        """
        with client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    item = pipe.lindex(key, -1)
                    if item is None or (expected is not None and item != expected):
                        return False
                    pipe.multi()
                    pipe.rpop(key)
                    pipe.rpush(queue, redelivered_entry(item))
                    pipe.execute()
                    return True
                except WatchError:
                    continue


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
