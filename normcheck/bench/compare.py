"""The regression gate: the cases of a new run slower than an old run's, past a threshold and
past the spread both runs measured.

A case is a regression when its median grew by more than ``threshold`` (0.10: 10%) AND its
20th percentile lies above the old run's 80th: the two runs' middle 60% of samples do not
overlap, so noise that either run saw cannot explain the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from normcheck.bench.records import BenchResult
from normcheck.errors import UsageError

ENV_KEYS = ("cpu", "threads", "device", "gpu")


@dataclass(frozen=True)
class Change:
    old: BenchResult
    new: BenchResult
    ratio: float  # new median / old median

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.new.as_dict(),
            "old_median_s": self.old.median,
            "old_p80_s": self.old.p80,
            "old_p20_s": self.old.p20,
            "ratio": self.ratio,
        }


@dataclass
class Comparison:
    threshold: float
    slower: list[Change] = field(default_factory=list)  # regressions: fail the gate
    faster: list[Change] = field(default_factory=list)
    unchanged: int = 0
    only_old: list[BenchResult] = field(default_factory=list)  # measured before, not now
    only_new: list[BenchResult] = field(default_factory=list)
    env_differences: list[str] = field(default_factory=list)


def parse_threshold(text: str) -> float:
    """ "10%" or "0.1" -> 0.1."""
    value = text.strip()
    try:
        t = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise UsageError(f"malformed threshold {text!r}; write a percentage such as 10%") from None
    if not (math.isfinite(t) and t >= 0):  # nan% and inf% would never flag a slower case
        raise UsageError(f"the threshold must be a finite percentage, not negative, got {text!r}")
    return t


def compare(
    old: list[BenchResult],
    new: list[BenchResult],
    threshold: float,
    old_env: dict[str, Any] | None = None,
    new_env: dict[str, Any] | None = None,
) -> Comparison:
    result = Comparison(threshold)
    before = {r.case.key(): (r, q) for r in old if (q := r.quantiles) is not None}  # the measured rows
    seen = set()
    for r in new:
        now = r.quantiles
        if now is None:  # not measured
            continue
        key = r.case.key()
        seen.add(key)
        if key not in before:
            result.only_new.append(r)
            continue
        prev, then = before[key]
        change = Change(prev, r, now.median / then.median)
        if change.ratio > 1 + threshold and now.p20 > then.p80:
            result.slower.append(change)
        elif change.ratio < 1 / (1 + threshold) and now.p80 < then.p20:
            result.faster.append(change)
        else:
            result.unchanged += 1
    result.only_old = [r for k, (r, _) in before.items() if k not in seen]
    if old_env is not None and new_env is not None:
        result.env_differences = [
            f"{k}: {old_env.get(k)!r} then, {new_env.get(k)!r} now"
            for k in ENV_KEYS
            if old_env.get(k) != new_env.get(k)
        ]
    return result
