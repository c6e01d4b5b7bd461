"""What a database column can hold: the checks every input path shares.

PostgreSQL's text and JSONB cannot hold U+0000; no database stores a lone
surrogate (what JSON's ``"\\ud800"`` decodes to); JSON has no NaN or
Infinity. Input is checked against these before it reaches a write.
"""

from __future__ import annotations

import math
from typing import Any


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


def has_unstorable(value: Any, *, numbers: bool = False) -> bool:
    """Whether any string (key or value) in a JSON value is unstorable.

    With ``numbers``, a non-finite float counts too. Iterative, so that a
    value nested as deep as the JSON parser allows cannot exhaust the stack.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_storable_text(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif numbers and isinstance(item, float) and not math.isfinite(item):
            return True
    return False
