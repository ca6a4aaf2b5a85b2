"""Units for bench figures, shared by the table and Markdown renderers."""

from __future__ import annotations

from normcheck.bench.records import BenchResult


def seconds(s: float | None) -> str:
    if s is None:
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def nbytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def number(v: float | None, fmt: str = ".3g", suffix: str = "") -> str:
    return "" if v is None else f"{v:{fmt}}{suffix}"


def spread(r: BenchResult) -> str:
    return "" if r.p20 is None else f"{seconds(r.p20)} – {seconds(r.p80)}"


def note(r: BenchResult) -> str:
    """The row's status in words: why there is no number, or what to mind about it."""
    if not r.measured:
        return f"{r.status}: {r.reason}" if r.reason else r.status
    parts = []
    if r.noisy:
        parts.append("noisy" + ("" if r.converged else ": IQR/median stayed above 10% until the time cap"))
    parts.extend(r.notes)
    return "; ".join(parts)


def speedup(r: BenchResult) -> str:
    return "" if r.speedup is None else f"{r.speedup:.2f}×"
