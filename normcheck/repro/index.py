"""The index of a reproducer directory (README.md): each script with the row it reproduces, the
failures no script could be written for with the reason, and the command that produced them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from normcheck.ops import fmt_shape
from normcheck.verify.records import CheckResult

INDEX = "README.md"


@dataclass(frozen=True)
class Reproducer:
    """One distinct failure of a run and what was written for it."""

    row: CheckResult  # the representative row (furthest beyond its tolerance)
    rows: int  # the rows of the run with this failure
    cause: str
    script: str | None  # the script's file name in the directory; None: not written
    reason: str = ""  # why no script was written


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _case(row: CheckResult) -> str:
    c = row.case
    params = c.params.label()
    return " ".join([c.dtype, fmt_shape(c.shape), *([params] if params != "-" else []), c.layout, c.kind, c.device])


def _error(row: CheckResult) -> str:
    if row.comparison is None or row.tolerance is None:
        return ""
    return f"{row.comparison.max_abs_err:.3g} / {row.tolerance.atol:.3g}"


def index_text(reproducers: Sequence[Reproducer], command: str) -> str:
    written = [r for r in reproducers if r.script is not None]
    lines = [
        "# normcheck reproducers",
        "",
        f"Produced by: `{command}`",
        "",
        "Each script reruns one distinct failure of that run (implementation, op, check and cause) with "
        "only the framework and NumPy installed. It reads the .npz of the same name beside it (the inputs, "
        "the float64 reference of the failing output and the tolerance normcheck held it to), prints the "
        "observed error and the error a correct implementation makes on the same inputs, and exits 1 while "
        "the failure is there, 0 once it is fixed: `python <script>`.",
        "",
    ]
    if written:
        lines += [
            "| script | implementation | op | check | case | status | rows | max abs error / atol | cause |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in written:
            c = r.row.case
            cells = [
                f"[{r.script}]({r.script})",
                f"{c.framework} {c.impl}",
                c.op,
                r.row.check,
                _case(r.row),
                r.row.status,
                r.rows,
                _error(r.row),
                r.cause,
            ]
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    else:
        lines.append("No reproducer was written." if reproducers else "The run had no failures to reproduce.")
    skipped = [r for r in reproducers if r.script is None]
    if skipped:
        lines += ["", "## Failures without a reproducer", ""]
        for r in skipped:
            c = r.row.case
            lines.append(f"- {c.framework} {c.impl}, {c.op} {r.row.check}, {_case(r.row)} ({r.cause}): {r.reason}")
    return "\n".join(lines) + "\n"
