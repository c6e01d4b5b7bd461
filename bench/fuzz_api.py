"""Deeper fuzzing of the HTTP API: the suite's Schemathesis runs with many more examples.

Runs ``tests/test_api_fuzz.py`` (every operation of the app's own OpenAPI document,
positive and negative inputs plus the coverage phase's boundary values, against the
real app on a fresh PostgreSQL database with a real key) with ``--examples`` per
operation instead of the suite's 20. Checks: no 5xx, status codes, content types,
headers and bodies conform to the document, missing auth is 401, unknown methods
405, and every valid query string of the reads is accepted.

Then runs ``tests/test_api_stateful.py``: Schemathesis' state machine chaining calls
along the document's links (create, read, update at the ETag's version, delete,
history, lists), ``--scenarios`` sequences of up to ``--steps`` calls instead of the
suite's 60 of 12, each on a team of its own, checked against a model of that team:
the same checks, plus every answer agreeing with the writes before it.

Run from the repository root (PostgreSQL and Redis as for the test suite)::

    /work/venv/bin/python bench/fuzz_api.py                    # 1,000 examples per operation
    /work/venv/bin/python bench/fuzz_api.py --examples 5000 --seed 7
    /work/venv/bin/python bench/fuzz_api.py -k "PATCH"         # one operation
    /work/venv/bin/python bench/fuzz_api.py --stateful --scenarios 2000 --steps 40

A failure prints the check that failed and a curl command that reproduces it. The exit
code is pytest's: 0 when every operation passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", type=int, default=1000, help="examples per operation (default 1000)"
    )
    parser.add_argument(
        "--scenarios", type=int, default=500, help="stateful call sequences (default 500)"
    )
    parser.add_argument(
        "--steps", type=int, default=30, help="most calls in one sequence (default 30)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stateless", action="store_true", help="only the per-operation run")
    which.add_argument("--stateful", action="store_true", help="only the call sequences")
    parser.add_argument("--seed", type=int, help="Hypothesis seed, to replay a run")
    parser.add_argument("-k", dest="select", help="pytest -k expression (e.g. an operation)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if min(args.examples, args.scenarios, args.steps) < 1:
        raise SystemExit("--examples, --scenarios and --steps must be at least 1")
    os.environ["CONTACT_SYNC_FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["CONTACT_SYNC_FUZZ_SCENARIOS"] = str(args.scenarios)
    os.environ["CONTACT_SYNC_FUZZ_STEPS"] = str(args.steps)
    os.chdir(ROOT)
    files = [
        *([] if args.stateful else ["tests/test_api_fuzz.py"]),
        *([] if args.stateless else ["tests/test_api_stateful.py"]),
    ]
    pytest_args = [
        *files,
        "-p",
        "no:cacheprovider",
        "-q",
        "--hypothesis-show-statistics",
    ]
    if args.seed is not None:
        pytest_args.append(f"--hypothesis-seed={args.seed}")
    if args.select:
        pytest_args += ["-k", args.select]
    started = time.perf_counter()
    code = int(pytest.main(pytest_args))
    elapsed = time.perf_counter() - started
    verdict = "no failures" if code == 0 else f"FAILED (pytest exit code {code})"
    budget = [
        *([] if args.stateful else [f"{args.examples} examples per operation"]),
        *([] if args.stateless else [f"{args.scenarios} sequences of up to {args.steps} calls"]),
    ]
    print(f"fuzz_api: {', '.join(budget)}, {elapsed:.0f} s: {verdict}")
    return code


if __name__ == "__main__":
    sys.exit(main())
