"""Check the targets of the performance issues against a results file.

Usage: ``python -m benchmarks.check [results.json]``; exits 1 when a target is
missed, 2 when there are no results. Run by ``make bench``, not by ``make test``
(timings do not belong in the test suite).

TARGETS are always enforced. NATIVE_TARGETS (issue 12) are enforced when the
results were measured with the native core in use (``results["native"]``);
otherwise each is printed as a ``skip`` line that says why. A target whose
metric the results do not hold is a miss, never a KeyError.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ._targets import NATIVE_TARGETS, TARGETS, Target

DEFAULT = Path(__file__).resolve().parent / "results" / "results.json"


@dataclass(frozen=True)
class Verdict:
    """One target against one results file; ``value`` is None when it was not measured."""

    target: Target
    value: float | None
    enforced: bool

    @property
    def met(self) -> bool:
        return self.value is not None and self.target.met(self.value)


def native_in_use(results: dict) -> tuple[bool, str]:
    """Whether the results were measured with the native core, and if not, why not.
    Results made before the field was recorded count as not."""
    native = results.get("native")
    if native is None:
        return False, "not recorded (results made before make bench recorded it)"
    if native.get("available"):
        return True, ""
    return False, native.get("why_not") or "unavailable"


def verdicts(results: dict) -> list[Verdict]:
    """TARGETS, then NATIVE_TARGETS (enforced only with the native core in use)."""
    ratios = results.get("ratios", {})
    enforce_native, _ = native_in_use(results)
    return ([Verdict(t, ratios.get(t.metric), True) for t in TARGETS]
            + [Verdict(t, ratios.get(t.metric), enforce_native) for t in NATIVE_TARGETS])


def _line(v: Verdict, why_not: str) -> str:
    t = v.target
    if v.value is None:
        text = f"{t.label}: not measured (no {t.metric!r} in the results' ratios; rerun `make bench`)"
    else:
        text = f"{t.label}: {v.value:.2f} (target {t.op} {t.bound})"
    if not v.enforced:
        return f"skip {text}; native core not in use: {why_not}"
    return f"{'ok  ' if v.met else 'MISS'} {text}"


def check(results: dict) -> list[str]:
    """One line per target; the ones that missed start with ``MISS``, the ones not
    enforced (issue 12's, without the native core) with ``skip``."""
    _, why_not = native_in_use(results)
    return [_line(v, why_not) for v in verdicts(results)]


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
