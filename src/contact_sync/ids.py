"""Identifiers: time-ordered UUIDs (version 7), increasing within a process.

Written here because the standard library gains ``uuid.uuid7`` only in
Python 3.14; time-ordered keys keep B-tree inserts at the right edge of the
index instead of scattering them. Ids made in one millisecond are kept in the
order they were made (RFC 9562 §6.2, method 2: the random bits of the next id
are the last one's plus a random step), so the keyset order of the lists and
the eligible stream is the order of creation within a process.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_RANDOM_BITS = 74  # 12 bits of rand_a and 62 of rand_b
_STEP_BITS = 32  # the random step between two ids of one millisecond
_lock = threading.Lock()
_last = (0, 0)  # (milliseconds, random bits) of the last id made


def _next(millis: int) -> tuple[int, int]:
    global _last
    with _lock:
        last_millis, last_bits = _last
        if millis > last_millis:
            bits = int.from_bytes(os.urandom(10), "big") >> (80 - _RANDOM_BITS)
        else:
            millis = last_millis  # the clock stood still or went back
            step = int.from_bytes(os.urandom(4), "big") >> (32 - _STEP_BITS)
            bits = last_bits + 1 + step
            if bits >> _RANDOM_BITS:  # the millisecond's space is used up: borrow the next
                millis, bits = millis + 1, int.from_bytes(os.urandom(10), "big") >> 7
        _last = (millis, bits)
        return _last


def new_id() -> str:
    """A new UUIDv7 string: 48 bits of Unix milliseconds, then 74 increasing random bits."""
    millis, bits = _next(time.time_ns() // 1_000_000)
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (bits >> 62) << 64  # rand_a: the high 12 bits
    value |= 0b10 << 62  # variant
    value |= bits & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
