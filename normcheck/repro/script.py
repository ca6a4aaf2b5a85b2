"""A reproducer's text: a docstring naming the row and its cause, the framework's snippet (and the
lines loading a user's code), and a main() that compares the failing output with the float64
reference under the tolerance normcheck used, prints both errors and exits 1 while it fails."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from normcheck.ops import OPS, fmt_shape
from normcheck.repro.call import Snippet, quoted
from normcheck.repro.user_code import Loader
from normcheck.verify.records import KNOWN, CheckResult

WIDTH = 100

MAIN = '''\
VERSION = {version}
TITLE = {title}
CHECK = {check}
CASE_DTYPE = {dtype}
DATA = dict(np.load(Path(__file__).with_suffix(".npz")))


def main():
    """Compare CHECK with the float64 reference as normcheck does: |got - expected| <= atol +
    rtol * |expected| elementwise, NaN counting as an infinite error."""
    print(f"{{TITLE}} ({{VERSION}})")
    outputs = run(DATA)
    if CHECK not in outputs:
        print(f"the implementation produced no {{CHECK}}")
        return 1
    got = np.asarray(outputs[CHECK], dtype=np.float64)
    want = DATA["expected"]
    if got.shape != want.shape:
        print(f"{{CHECK}} has shape {{got.shape}}, expected {{want.shape}}")
        return 1
    rtol, atol, witness = (float(DATA[k]) for k in ("rtol", "atol", "witness_err"))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - want)
        err = np.where(np.isnan(err), np.inf, err)
        beyond = err > atol + rtol * np.abs(want)
    if not want.size:
        print(f"{{CHECK}} is empty: nothing to compare")
        return 0
    at = np.unravel_index(int(np.argmax(err)), want.shape)
    print(
        f"observed max abs error {{err[at]:.3g}} at {{[int(i) for i in at]}} (got {{got[at]:.7g}}, expected "
        f"{{want[at]:.7g}}); {{int(beyond.sum())}} of {{want.size}} elements beyond tolerance"
    )
    print(
        f"expected error at most {{atol:.3g}} + {{rtol:.3g}} * |expected|: a correct {{CASE_DTYPE}} implementation "
        f"errs by at most {{witness:.3g}} here"
    )
    if beyond.any():
        print(f"reproduced: {{CHECK}} is beyond tolerance")
        return 1
    print(f"not reproduced: {{CHECK}} is within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


@dataclass(frozen=True)
class Description:
    """What the script's docstring says of the failure it reproduces."""

    row: CheckResult
    rows: int  # rows of the run with the same failure
    cause: str
    command: str  # the command line (or call) that produced it
    needs: tuple[str, ...]  # pip distributions besides numpy
    arrays: tuple[str, ...]  # the names in the .npz


def title(row: CheckResult) -> str:
    """One line naming the row: implementation, op, check and case."""
    c = row.case
    params = c.params.label()
    parts = [c.dtype, fmt_shape(c.shape), *([params] if params != "-" else []), c.layout, f"{c.kind} input"]
    return f"{c.impl} ({c.framework}): {OPS[c.op].title} {row.check}, {' '.join(parts)}, {c.device}"


def _paragraph(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def docstring(d: Description, stem: str) -> str:
    row = d.row
    status = "a known defect of the framework" if row.status == KNOWN else "a failure"
    same = ""
    if d.rows > 1:
        same = f" ({d.rows} rows of the run fail the same way; this one is furthest beyond its tolerance)"
    paragraphs = [
        f"Reproduces {status} found by normcheck: {title(row)}.{same}",
        f"Cause: {d.cause}.",
    ]
    if row.diagnosis is not None:
        paragraphs.append(f"Diagnosis: {row.diagnosis.summary}.")
    if row.message:
        paragraphs.append(f"normcheck reported: {row.message}")
    paragraphs.append(f"Produced by: {d.command}")
    paragraphs.append(
        f"Run: python {stem}.py (needs {', '.join(('numpy', *d.needs))}). It reads {stem}.npz beside it: "
        f"{', '.join(d.arrays)} (the inputs, float64 holding values exact in {row.case.dtype}), expected "
        f"(the float64 reference of {row.check}), rtol, atol (the tolerance normcheck held it to) and "
        f"witness_err (the largest error of a correct {row.case.dtype} implementation on these inputs). "
        "Exits 1 while the output is beyond tolerance, 0 once it is within."
    )
    text = "\n\n".join(_paragraph(p) for p in paragraphs)
    return '"""' + text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '\n"""'


def render(d: Description, stem: str, snippet: Snippet, loader: Loader | None = None) -> str:
    """The whole script."""
    imports = (*(loader[0] if loader else ()), "import sys", "from pathlib import Path")
    parts = [
        "#!/usr/bin/env python3\n"
        + docstring(d, stem)
        + "\n\n"
        + "\n".join(imports)
        + "\n\nimport numpy as np\n\n"
        + "\n".join(snippet.imports)
    ]
    if loader:
        parts.append(loader[1].strip("\n"))
    parts.append(snippet.code.strip("\n"))
    parts.append(
        MAIN.format(
            version=snippet.version,
            title=quoted(title(d.row)),
            check=quoted(d.row.check),
            dtype=quoted(d.row.case.dtype),
        ).rstrip()
    )
    return "\n\n\n".join(parts) + "\n"
