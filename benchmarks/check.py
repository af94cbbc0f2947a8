"""Check the targets of the performance issue against a results file.

Usage: ``python -m benchmarks.check [results.json]``; exits 1 when a target is
missed, 2 when there are no results. Run by ``make bench``, not by ``make test``
(timings do not belong in the test suite).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._targets import TARGETS

DEFAULT = Path(__file__).resolve().parent / "results" / "results.json"


def check(results: dict) -> list[str]:
    """One line per target; the ones that missed start with ``MISS``."""
    lines = []
    for target in TARGETS:
        value = results["ratios"][target.metric]
        verdict = "ok  " if target.met(value) else "MISS"
        lines.append(f"{verdict} {target.label}: {value:.2f} (target {target.op} {target.bound})")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    if not path.is_file():
        print(f"benchmarks.check: no results at {path}: run `make bench` first", file=sys.stderr)
        return 2
    lines = check(json.loads(path.read_text()))
    print("\n".join(lines))
    missed = [line for line in lines if line.startswith("MISS")]
    if missed:
        print(f"{len(missed)} target(s) missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
