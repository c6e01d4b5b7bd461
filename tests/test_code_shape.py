"""The shape of the source: no function so long that it cannot be read in one screen."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 60


def _functions() -> Iterator[tuple[str, int]]:
    """``path:name`` and the length in lines of every function in ``src/``, migrations aside."""
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" in path.relative_to(SRC).parts:
            continue
        where = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                yield f"{where}:{node.name}", node.end_lineno - node.lineno + 1


def test_no_function_in_src_is_over_60_lines() -> None:
    too_long = {name: lines for name, lines in _functions() if lines > MAX_FUNCTION_LINES}
    assert too_long == {}
