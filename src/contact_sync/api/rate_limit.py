"""Per-key rate limits: a token bucket per API key (docs/design.md §16, fair share).

A key's bucket holds up to ``burst`` tokens and refills at ``per_second``; each
authenticated request takes one, and a request that finds none is answered 429 with
``Retry-After``. The limits are per team (settings, with per-team overrides); the
bucket is per key.

Buckets live in Redis when the broker is Redis, so that every API process of a
deployment counts against the same bucket: one Lua script reads, refills, takes and
writes atomically on Redis' own clock, under ``contact_sync:rate:<key id>`` with a TTL
of a full refill (an expired bucket is a full one). Redis rather than the database:
a token bucket is a write per request, which PostgreSQL would have to log and vacuum
for nothing. On any other broker (the embedded ``filesystem://`` one) the buckets are
kept in the process, which is then the deployment; while Redis does not answer, the
process' own buckets stand in, so the API keeps answering and keeps a limit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from contact_sync.settings import Settings

logger = logging.getLogger("contact_sync.api")

KEY_PREFIX = "contact_sync:rate:"

# KEYS[1]: the bucket. ARGV: tokens a second, burst. Returns {taken (1|0), seconds to wait}.
# TIME is Redis' clock, shared by every API process; Redis 5+ replicates the effects.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if taken == 1 then
  return {1, '0'}
end
return {0, tostring((1 - tokens) / rate)}
"""

# After Redis failed, the process' buckets are used this long before Redis is tried again.
_REDIS_PAUSE_SECONDS = 5.0
# ... and that is logged at most this often.
_WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Limit:
    """A bucket's refill rate (tokens a second) and size."""

    per_second: float
    burst: int


class RateLimited(Exception):
    """The key's bucket is empty; a token is back in ``retry_after`` seconds (at least 1)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Rate limit exceeded; retry after {retry_after} s")
        self.retry_after = retry_after


class Buckets(Protocol):
    """Where buckets are kept."""

    def take(self, key_id: str, limit: Limit) -> float:
        """Take a token: 0 when one was there, else the seconds until one is."""


class MemoryBuckets:
    """Buckets of this process alone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: str, limit: Limit) -> float:
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key_id, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + max(0.0, now - at) * limit.per_second)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / limit.per_second


class RedisBuckets:
    """Buckets shared by every API process, in the broker's Redis."""

    def __init__(self, url: str) -> None:
        # Short timeouts: a request waits on this before anything else.
        self._client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._take = self._client.register_script(_TAKE)

    def take(self, key_id: str, limit: Limit) -> float:
        taken, wait = self._take(keys=[KEY_PREFIX + key_id], args=[limit.per_second, limit.burst])
        return 0.0 if int(taken) else float(wait)


class RateLimiter:
    """Takes a token from a key's bucket, under its team's limit, or raises ``RateLimited``."""

    def __init__(
        self,
        default: Limit | None,
        teams: dict[str, Limit | None],
        store: Buckets,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default = default
        self.teams = teams
        self.store = store
        self._local = store if isinstance(store, MemoryBuckets) else MemoryBuckets(clock)
        self._clock = clock
        self._store_back_at = 0.0
        self._warned_at = -math.inf

    def limit_for(self, team_id: str) -> Limit | None:
        """The team's limit per key; None when it has none."""
        return self.teams.get(team_id, self.default)

    def check(self, *, team_id: str, key_id: str) -> None:
        """Take a token for this request, or raise ``RateLimited``."""
        limit = self.limit_for(team_id)
        if limit is None:
            return
        wait = self._take(key_id, limit)
        if wait > 0:
            raise RateLimited(max(1, math.ceil(wait)))

    def _take(self, key_id: str, limit: Limit) -> float:
        if self.store is self._local or self._clock() < self._store_back_at:
            return self._local.take(key_id, limit)
        try:
            return self.store.take(key_id, limit)
        except redis.RedisError as exc:
            now = self._clock()
            self._store_back_at = now + _REDIS_PAUSE_SECONDS
            if now - self._warned_at >= _WARN_EVERY_SECONDS:
                self._warned_at = now
                logger.warning(
                    "rate limits are kept in this process for now: Redis did not answer (%s)",
                    type(exc).__name__,
                )
            return self._local.take(key_id, limit)


def _limit(per_second: float, burst: int) -> Limit | None:
    return Limit(per_second, burst) if per_second > 0 else None


def rate_limiter_for(settings: Settings) -> RateLimiter:
    """The limiter ``settings`` describe: Redis buckets when the broker is Redis."""
    default = _limit(settings.api_rate_limit_per_second, settings.api_rate_limit_burst)
    teams = {
        team_id: _limit(team.per_second, team.burst)
        for team_id, team in settings.api_rate_limit_teams.items()
    }
    store: Buckets = MemoryBuckets()
    if default is not None or any(teams.values()):
        if settings.broker_url.startswith(("redis://", "rediss://")):
            store = RedisBuckets(settings.broker_url)
        else:
            logger.info("rate limits are kept in this process: the broker is not Redis")
    return RateLimiter(default, teams, store)
