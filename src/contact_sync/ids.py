"""Identifiers: time-ordered UUIDs (version 7).

Written here because the standard library gains ``uuid.uuid7`` only in
Python 3.14; time-ordered keys keep B-tree inserts at the right edge of the
index instead of scattering them.
"""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    """A new UUIDv7 string: 48 bits of Unix milliseconds, then randomness."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 68) & 0xFFF) << 64  # 12 random bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
