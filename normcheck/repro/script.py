"""A reproducer's text: a docstring naming the row and its cause, the framework's snippet (and the
lines loading a user's code), and a main() that compares the failing output with the float64
reference under the tolerance normcheck used, prints both errors and exits 1 while it fails.
An FP8-quantized row's main() judges its scale or its FP8 values by verify's rule
(normcheck.verify.quantized), written out in NumPy."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from normcheck.ops import OPS, fmt_shape
from normcheck.ops.quantize import STATIC, U32, V_ROUNDINGS, Quantization
from normcheck.repro.call import QUANTIZED_DTYPE, Snippet, quoted
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


# An FP8 format's bits, which the script's rounding needs: (mantissa bits, the exponent of its
# smallest normal value); normcheck.ops.quantize.FORMATS names the formats (tests check these
# against ml_dtypes.finfo)
FP8_BITS = {"float8_e4m3fn": (3, -6), "float8_e5m2": (2, -14)}

QUANTIZED_MAIN = '''\
VERSION = {version}
TITLE = {title}
CHECK = {check}
CASE_DTYPE = {dtype}
DATA = dict(np.load(Path(__file__).with_suffix(".npz")))
FP8 = {fp8}  # the FP8 format asked for: its largest value, mantissa bits and smallest normal exponent
FP8_MAX, MANTISSA_BITS, MIN_EXPONENT = {fp8_max!r}, {mantissa}, {min_exponent}
PLAIN_FLOATS = ("float16", "bfloat16", "float32", "float64")  # dtypes that may carry FP8 values
NORMALIZED_AXES = {axes!r}  # a row is one index of the other axes
STATIC = {static}  # the scale was given, not computed from y
V_ERROR = {v_error!r}  # the float32 roundings of y / scale a correct kernel may add, relative


def fp8(v):
    """``v`` clamped to +-FP8_MAX and rounded to the nearest FP8 value, ties to even (NaN stays NaN)."""
    a = np.clip(np.asarray(v, dtype=np.float64), -FP8_MAX, FP8_MAX)
    with np.errstate(invalid="ignore"):
        _, exponent = np.frexp(np.where(np.isfinite(a), a, 1.0))
        quantum = np.exp2(np.maximum(exponent - 1, MIN_EXPONENT) - MANTISSA_BITS)
        return np.rint(a / quantum) * quantum


def as_scale(got, shape):
    """A returned scale as one value per row (any shape of that size) or one for the tensor, with
    the normalized axes kept as size 1; None for any other size."""
    a = np.asarray(got, dtype=np.float64)
    per_row = tuple(1 if i in NORMALIZED_AXES else n for i, n in enumerate(shape))
    if a.size == int(np.prod(per_row, dtype=np.int64)):
        return a.reshape(per_row)
    if a.size == 1:
        return a.reshape((1,) * len(shape))
    return None


def judge_scale(scale):
    """(got, expected, accepted, the accepted range): each scale finite, positive and within
    [scale_lo, scale_hi]."""
    shape = np.broadcast_shapes(DATA["expected_scale"].shape, scale.shape)
    want = np.broadcast_to(DATA["expected_scale"], shape)
    got = np.broadcast_to(scale, shape)
    lo, hi = (np.broadcast_to(DATA[k], shape) for k in ("scale_lo", "scale_hi"))
    with np.errstate(invalid="ignore"):
        return got, want, np.isfinite(got) & (got > 0) & (got >= lo) & (got <= hi), (lo, hi)


def judge_values(q, dtype, scale):
    """(expected FP8 values, y / scale, accepted): with v = y / scale (the returned scale where it
    is finite and positive) and t the error a correct kernel may make on v, every FP8 value
    between fp8(v - t) and fp8(v + t) is right; in a dtype other than FP8 each must be an FP8 value."""
    y, expected_scale = DATA["expected"], DATA["expected_scale"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        used = expected_scale if scale is None else np.where(np.isfinite(scale) & (scale > 0), scale, expected_scale)
        y_err = float(DATA["atol"]) + float(DATA["rtol"]) * np.abs(y)
        v = y / used
        t = y_err / np.abs(used) + V_ERROR * np.abs(v)
        lo, hi = fp8(v - t), fp8(v + t)
        lo_open, hi_open = ~np.isfinite(lo), ~np.isfinite(hi)
        finite = np.isfinite(q) & (lo_open | (q >= lo)) & (hi_open | (q <= hi)) & ~(lo_open & hi_open)
        ok = finite | (~np.isfinite(q) & (lo_open | hi_open))
        if dtype != FP8:
            ok &= ~np.isfinite(q) | ((np.abs(q) <= FP8_MAX) & (fp8(q) == q))
    return fp8(v), v, ok


def main():
    """Judge CHECK as normcheck does: the scale against amax / FP8_MAX (or the static scale given)
    within the tolerance of y's amax; the FP8 values against the rounding of y / scale."""
    print(f"{{TITLE}} ({{VERSION}})")
    outputs = run(DATA)
    shape = DATA["expected"].shape
    scale = as_scale(outputs["scale"], shape) if "scale" in outputs else None
    if CHECK == "scale":
        if "scale" not in outputs:
            print("no scale returned" + (": the static scale given is q's" if STATIC else ""))
            return 0 if STATIC else 1
        if scale is None:
            found = np.shape(outputs["scale"])
            print(f"returned a scale of shape {{found}}: expected one value per row or one for the tensor")
            return 1
        got, want, ok, (lo, hi) = judge_scale(scale)
        what, wrong = ("the static scale given" if STATIC else f"amax / {{FP8_MAX:g}}"), None
        words = "scales"
    else:
        if "quantized" not in outputs:
            print("the implementation returned no quantized output")
            return 1
        got, dtype = outputs["quantized"], outputs[{dtype_key}]
        if got.shape != shape:
            print(f"quantized has shape {{got.shape}}, expected {{shape}}")
            return 1
        if not dtype.startswith(("float", "bfloat")):
            print(f"returned {{dtype}} values: not floating point")
            return 1
        want, v, ok = judge_values(got, dtype, scale)
        what, words = "the FP8 rounding of y / scale", "values"
        wrong = None if dtype in (FP8, *PLAIN_FLOATS) else f"returned {{dtype}}, not {{FP8}}"
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - want)
        err = np.where(np.isnan(err), np.inf, err)
    if not want.size:
        print(f"{{CHECK}} is empty: nothing to compare")
        return 0
    at = np.unravel_index(int(np.argmax(np.where(ok, -1.0, err))) if not ok.all() else int(np.argmax(err)), want.shape)
    extra = f", accepted {{lo[at]:.9g}} to {{hi[at]:.9g}}" if CHECK == "scale" else f", y / scale = {{v[at]:.7g}}"
    print(
        f"observed max abs error {{err.max():.3g}}, worst at {{[int(i) for i in at]}} (got {{got[at]:.9g}}, expected "
        f"{{want[at]:.9g}}{{extra}}); {{int((~ok).sum())}} of {{want.size}} {{words}} beyond tolerance"
    )
    if wrong:
        print(wrong)
    rtol, atol, witness = (float(DATA[k]) for k in ("rtol", "atol", "witness_err"))
    print(
        f"expected {{what}}, allowing y's tolerance {{atol:.3g}} + {{rtol:.3g}} * |y| (a correct {{CASE_DTYPE}} "
        f"norm errs on y by at most {{witness:.3g}} here)"
        + (": one FP8 step off only within it of a rounding boundary" if CHECK != "scale" else "")
    )
    if wrong or not ok.all():
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
    reads = (
        f"expected (the float64 reference of {row.check}), rtol, atol (the tolerance normcheck held it to) and "
        f"witness_err (the largest error of a correct {row.case.dtype} implementation on these inputs)"
    )
    if row.case.params.quant is not None:
        reads = (
            "expected (the float64 reference of the norm's output y), rtol and atol (the tolerance of y: a correct "
            "kernel's y errs by at most atol + rtol * |y|), witness_err (the largest error of a correct "
            f"{row.case.dtype} implementation's y on these inputs), expected_scale, scale_lo and scale_hi (the scale "
            "a correct kernel returns and the range it may lie in)"
        )
    paragraphs.append(
        f"Run: python {stem}.py (needs {', '.join(('numpy', *d.needs))}). It reads {stem}.npz beside it: "
        f"{', '.join(d.arrays)} (the inputs, float64 holding values exact in {row.case.dtype}), {reads}. "
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
    parts.append(_main(d.row, snippet).rstrip())
    return "\n\n\n".join(parts) + "\n"


def _main(row: CheckResult, snippet: Snippet) -> str:
    """The comparison: normcheck's tolerance rule, or for an FP8-quantized row verify's judge of
    its scale or its FP8 values."""
    common = {
        "version": snippet.version,
        "title": quoted(title(row)),
        "check": quoted(row.check),
        "dtype": quoted(row.case.dtype),
    }
    quant = row.case.params.quant
    if quant is None:
        return MAIN.format(**common)
    return QUANTIZED_MAIN.format(**common, **quantized_constants(row, quant))


def quantized_constants(row: CheckResult, quant: Quantization) -> dict[str, object]:
    """The FP8 format's and the case's constants of QUANTIZED_MAIN."""
    c = row.case
    fmt = quant.fmt
    mantissa, min_exponent = FP8_BITS[fmt.dtype]
    axes = OPS[c.op].normalization(c.shape, c.params).axes
    return {
        "fp8": quoted(fmt.dtype),
        "fp8_max": fmt.max,
        "mantissa": mantissa,
        "min_exponent": min_exponent,
        "axes": tuple(axes),
        "static": quant.scale == STATIC,
        "v_error": V_ROUNDINGS * U32,
        "dtype_key": quoted(QUANTIZED_DTYPE),
    }
