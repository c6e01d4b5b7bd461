"""The ``pattern`` of a text field: a regular expression that cannot run for minutes.

Python's ``re`` backtracks and cannot be interrupted, so a pattern such as
``(a+)+$`` would hold a worker (or an API thread, with the GIL) for minutes
on one 2,000-character value. Rather than add a second regex engine with a
timeout, patterns are restricted to a syntax whose worst case is bounded:
the pattern is parsed by ``re``'s own parser and refused when it uses
backreferences, lookaround or conditionals (which no bound covers), when a
repeated part itself holds a variable repeat or an alternation (the nesting
behind exponential backtracking), or when the product of its choices (each
variable repeat's span, each alternation's branches) exceeds
``MAX_PATTERN_WORK``: about four million steps on the longest text value,
tens of milliseconds at worst. Values are matched whole (``fullmatch``).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from typing import Any

MAX_PATTERN_LENGTH = 200
MAX_TEXT_LENGTH = 2000  # the longest text value (docs/design.md §13), what work is counted on
MAX_PATTERN_WORK = MAX_TEXT_LENGTH**2

# re's parser is private but stable since Python 3.0 (sre_parse, renamed in 3.11).
_parser: Any = importlib.import_module("re._parser")
_REFUSED = frozenset({"GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE", "ASSERT", "ASSERT_NOT"})
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})


class UnsafePattern(ValueError):
    """A pattern this service will not run."""


def _children(op: str, av: Any) -> list[list[Any]]:
    """The sub-sequences of one parsed item."""
    if op in _REPEATS:
        return [list(av[2])]
    if op == "SUBPATTERN":
        return [list(av[3])]
    if op == "ATOMIC_GROUP":
        return [list(av)]
    if op == "BRANCH":
        return [list(branch) for branch in av[1]]
    return []


def _span(op: str, av: Any) -> int:
    """How many choices one item offers the backtracker (1: none)."""
    if op in _REPEATS:
        low, high = int(av[0]), int(av[1])
        if high == low:
            return 1
        return min(high - low + 1, MAX_TEXT_LENGTH)
    if op == "BRANCH":
        return len(av[1])
    return 1


def _work(items: list[Any], *, in_repeat: bool) -> int:
    """The product of the choices in ``items``; raises for what no bound covers."""
    total = 1
    for op_code, av in items:
        op = str(op_code)
        if op in _REFUSED:
            raise UnsafePattern("Pattern must not use backreferences, lookaround or conditionals")
        span = _span(op, av)
        if in_repeat and span > 1:
            raise UnsafePattern(
                "Pattern must not repeat a part that holds a variable repeat or an alternation"
            )
        repeated = in_repeat or (op in _REPEATS and int(av[1]) > 1)
        for child in _children(op, av):
            total *= _work(child, in_repeat=repeated)
        total *= span
        if total > MAX_PATTERN_WORK:
            raise UnsafePattern("Pattern is too open: it has too many repeats or alternatives")
    return total


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is a regular expression this service runs, else ``UnsafePattern``."""
    if not isinstance(pattern, str) or not pattern:
        raise UnsafePattern("Pattern must be a non-empty string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePattern(f"Pattern must be at most {MAX_PATTERN_LENGTH} characters")
    if "\x00" in pattern or not pattern.isprintable():
        raise UnsafePattern("Pattern must be printable text")
    try:
        parsed = _parser.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise UnsafePattern(f"Pattern is not a valid regular expression: {exc}") from None
    _work(list(parsed), in_repeat=False)
    return pattern


@lru_cache(maxsize=1024)
def compiled(pattern: str) -> re.Pattern[str]:
    """The compiled form of a checked pattern (definitions are few; values many)."""
    return re.compile(check_pattern(pattern))
