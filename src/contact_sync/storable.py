"""What a database column can hold: the checks every input path shares.

PostgreSQL's text and JSONB cannot hold U+0000; no database stores a lone
surrogate (what JSON's ``"\\ud800"`` decodes to); JSON has no NaN or
Infinity; JSON columns are read back with orjson (db/engine.py), which holds
64-bit integers only (a larger one comes back as a float, or, past a double's
range, makes its whole row unreadable). Input is checked against these before
it reaches a write.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

MIN_INTEGER = -(2**63)
MAX_INTEGER = 2**63 - 1


def is_storable_number(value: Any) -> bool:
    """Whether a JSON number reads back as itself: finite, and an integer within 64 bits."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return MIN_INTEGER <= value <= MAX_INTEGER
    return True


def is_unicode(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_storable_text(text: str) -> bool:
    """Whether ``text`` fits a text column: valid Unicode without NUL."""
    return "\x00" not in text and is_unicode(text)


# What ``_first_unstorable`` answers when everything can be stored (None is a JSON value).
_STORABLE = object()


def _first_unstorable(value: Any, numbers: bool) -> Any:
    """The first string (key or value), or with ``numbers`` number, no column holds.

    Iterative, so that a value nested as deep as the JSON parser allows cannot
    exhaust the stack; ``_STORABLE`` when there is none.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_storable_text(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif numbers and not is_storable_number(item):
            return item
    return _STORABLE


def _certainly_storable_text(value: Any) -> bool:
    """True when no string in ``value`` can be unstorable; False when unsure.

    orjson writes a JSON value several times faster than the walk below visits
    it, refuses lone surrogates (and what else it cannot write: then we are
    unsure), and writes U+0000 as the escape ``\\u0000``: text without that
    sequence holds no NUL. A text that does (a NUL, or a backslash followed by
    ``u0000``) is left to the walk.
    """
    try:
        written = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return False
    return b"\\u0000" not in written


def has_unstorable(value: Any, *, numbers: bool = False) -> bool:
    """Whether any string (key or value) in a JSON value is unstorable.

    With ``numbers``, a number that is not storable counts too.
    """
    if not numbers and _certainly_storable_text(value):
        return False
    return _first_unstorable(value, numbers) is not _STORABLE


def unstorable_text(value: Any) -> str | None:
    """The first string (key or value) in a JSON value that no text column holds, if any."""
    found = _first_unstorable(value, False)
    return found if isinstance(found, str) else None
