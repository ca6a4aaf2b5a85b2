"""Why a quantized case failed: the known mistakes of FP8 quantization, each re-run on the case.

Each hypothesis predicts the scale a kernel making the mistake returns (with the tolerance a
correct scale has) and the FP8 values it returns for its own scale (the rounding, clamp and
format it uses). It is named only when its prediction brings every failing check of the case
within tolerance, keeps the passing ones passing, and cuts the scale's error at least tenfold;
two equal fits are ambiguous; none is "unknown". Dividing by the scale or multiplying by its
reciprocal is no hypothesis: the two differ by a float32 rounding or two of y / scale, which the
boundary rule of normcheck.ops.quantize accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from normcheck.diagnosis.hypotheses import DISTRIBUTED_ONLY, FORMULA, HYPOTHESES, Context
from normcheck.diagnosis.variants import plain
from normcheck.frameworks.base import RunOutput
from normcheck.ops.quantize import (
    E4M3FN,
    EVERY_FORMAT,
    PLAIN_FLOATS,
    QUANTIZED_CHECK,
    ROW,
    SCALE_CHECK,
    STATIC,
    TENSOR,
    Expected,
    Fp8Format,
    Rounding,
    from_ordinal,
    ordinal,
    row_amax,
    scale_accepted,
    scale_bounds,
    values_accepted,
)
from normcheck.problem import Problem
from normcheck.reference import normalized_input, reference
from normcheck.verify.records import FAIL, PASS, CheckResult, Diagnosis

# the family of these mistakes: the scale or the FP8 conversion, in every dtype alike
QUANTIZATION = "quantization"
# A hypothesis explains the scale only when it brings the error down at least this many times.
CUT = 10.0
# Two explanations fit equally when the second's error (against its allowance) is within this
# factor of the first's, or both are below this fraction of it.
EQUAL_FIT, EXACT_FIT = 2.0, 0.01
# fp8 max values kernels are known to divide by, with why (a wrong one in the scale alone)
KNOWN_MAXES: tuple[tuple[float, str], ...] = (
    (240.0, "e4m3fnuz's largest value"),
    (224.0, "vLLM's ROCm e4m3fnuz maximum"),
    (448.0, "e4m3fn's largest value"),
    (57344.0, "e5m2's largest value"),
    (127.0, "int8's largest value"),
)


@dataclass(frozen=True)
class Guess:
    """What a kernel making one mistake returns: its scale (``center``, a correct one of its
    kind lying in [``lo``, ``hi``]; None: as expected), its conversion (``rounding``; None: as
    expected) and the dtype of its values (None: the rounding's format)."""

    id: str
    title: str
    fix: str
    center: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    rounding: Rounding | None = None
    zero_scale: bool = False  # a scale of 0 is what the mistake returns where it predicts 0
    y: np.ndarray | None = None  # the norm's output under a mistake in the norm itself (None: y)
    family: str = QUANTIZATION


@dataclass(frozen=True)
class _Fit:
    guess: Guess
    score: float  # the worst remaining scale error against its allowance (0: exact)
    after: dict[str, str]  # failing check -> its error under the guess, in words


def diagnose_quantized(
    problem: Problem,
    exp: Expected,
    expected: dict[str, np.ndarray],
    out: RunOutput,
    scale: np.ndarray | None,
    rows: list[CheckResult],
) -> dict[str, Diagnosis]:
    """A diagnosis for each failing check of a quantized case, by check name (``expected``: the
    reference outputs of the unquantized case, for the norm's own mistakes)."""
    status: dict[str, str] = {r.check: r.status for r in rows if r.status in (PASS, FAIL)}
    failing = [c for c, s in status.items() if s == FAIL]
    if not failing:
        return {}
    before = {r.check: r for r in rows if r.check in failing}
    q, q_dtype = out.values.get(QUANTIZED_CHECK), out.dtypes.get(QUANTIZED_CHECK)
    guesses = [*_guesses(problem, exp, scale), *_norm_guesses(problem, exp, expected)]
    fits = []
    for guess in guesses:
        fit = _fit(guess, exp, q, q_dtype, scale, status, before)
        if fit is not None:
            fits.append(fit)
    if not fits:
        unknown = Diagnosis(
            None,
            "unknown",
            f"none of the {len(guesses)} known mistakes of FP8 quantization normcheck tests reproduces this output",
        )
        return dict.fromkeys(failing, unknown)
    fits.sort(key=lambda f: f.score)
    best, others = fits[0], fits[1:]
    rival = next((f for f in others if f.score <= max(EQUAL_FIT * best.score, EXACT_FIT)), None)
    cause = best.guess.title if rival is None else f"ambiguous: {best.guess.title} or {rival.guess.title}"
    evidence = "; ".join(f"{check}: {text} under '{best.guess.title}'" for check, text in best.after.items())
    found = Diagnosis(
        best.guess.id,
        cause,
        evidence,
        "case",
        tuple(f.guess.id for f in others),
        fix=best.guess.fix if rival is None else "",
        family=best.guess.family,
        ambiguous=rival is not None,
    )
    return dict.fromkeys(failing, found)


def _fit(
    guess: Guess,
    exp: Expected,
    q: np.ndarray | None,
    q_dtype: str | None,
    scale: np.ndarray | None,
    status: dict[str, str],
    before: dict[str, CheckResult],
) -> _Fit | None:
    """The guess's fit: None where it leaves a failing check failing, breaks a passing one, or
    does not cut the scale's error tenfold."""
    after: dict[str, str] = {}
    score = 0.0
    if SCALE_CHECK in status and scale is not None:
        center = exp.scale if guess.center is None else guess.center
        lo = exp.lo if guess.lo is None else guess.lo
        hi = exp.hi if guess.hi is None else guess.hi
        shape = np.broadcast_shapes(center.shape, scale.shape)
        got = np.broadcast_to(scale, shape)
        ok = scale_accepted(got, np.broadcast_to(lo, shape), np.broadcast_to(hi, shape))
        if guess.zero_scale:
            ok |= (got == 0) & (np.broadcast_to(center, shape) == 0)
        if not ok.all():
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            err = float(np.max(np.abs(got - center), initial=0.0))
            half = float(np.max((hi - lo) / 2, initial=0.0))
        if status[SCALE_CHECK] == FAIL:
            was = before[SCALE_CHECK].comparison
            if was is None or err * CUT > was.max_abs_err:
                return None
            after[SCALE_CHECK] = f"max abs err {was.max_abs_err:.3g} -> {err:.3g} (allowed {half:.2g})"
            score = err / half if half > 0 else (0.0 if err == 0 else np.inf)
    if QUANTIZED_CHECK in status and q is not None:
        if not _values_fit(guess, exp, q, q_dtype, scale).all():
            return None
        if status[QUANTIZED_CHECK] == FAIL:
            was = before[QUANTIZED_CHECK].comparison
            off = f"{was.mismatched} of {was.numel} elements off" if was is not None else "wrong"
            if q_dtype not in PLAIN_FLOATS and q_dtype != exp.quant.fmt.dtype:
                off = f"{q_dtype} values, {off}"
            after[QUANTIZED_CHECK] = f"{off} -> none"
    return _Fit(guess, score, after) if after else None


def _values_fit(
    guess: Guess, exp: Expected, q: np.ndarray, q_dtype: str | None, scale: np.ndarray | None
) -> np.ndarray:
    """Elementwise: q is what the guess's kernel returns for its own scale."""
    rounding = guess.rounding or exp.rounding
    if q_dtype != rounding.fmt.dtype and q_dtype not in PLAIN_FLOATS:
        return np.zeros(np.shape(q), dtype=bool)
    fallback = exp.scale if guess.center is None else guess.center
    used = fallback
    if scale is not None:
        with np.errstate(invalid="ignore"):
            used = np.where(np.isfinite(scale) & (scale > 0), scale, fallback)
    y = exp.y if guess.y is None else guess.y
    return values_accepted(q, y, exp.y_err, used, rounding, exact_format=q_dtype == rounding.fmt.dtype)


def _guesses(problem: Problem, exp: Expected, scale: np.ndarray | None) -> Iterator[Guess]:
    """Every mistake tried on the case, in order (``scale``: the one returned, if usable)."""
    fmt, mode = exp.quant.fmt, exp.quant.scale
    if mode == STATIC and scale is not None:
        yield _one_ulp(exp, scale)
        for dynamic in (ROW, TENSOR):
            yield _dynamic(
                exp,
                row_amax(exp.y, exp.axes, dynamic),
                fmt.max,
                f"static_scale_ignored_{dynamic}",
                f"the static scale given is ignored: the scale is computed from y's amax per {dynamic}",
                "quantize with the scale given (static quantization computes none)",
            )
    else:
        amax = row_amax(exp.y, exp.axes, mode)
        for value, why in _maxes(fmt):
            yield _dynamic(
                exp,
                amax,
                value,
                f"fp8_max_{value:g}",
                f"scale = amax / {value:g} ({why}) instead of amax / {fmt.max:g} ({fmt.dtype}'s largest value)",
                f"divide the amax by {fmt.max:g}, {fmt.dtype}'s largest finite value",
            )
        other = TENSOR if mode == ROW else ROW
        yield _dynamic(
            exp,
            row_amax(exp.y, exp.axes, other),
            fmt.max,
            "tensor_scale" if other == TENSOR else "row_scale",
            "one scale for the whole tensor (its amax) where a scale per row is claimed"
            if other == TENSOR
            else "a scale per row (each row's amax) where one scale for the tensor is claimed",
            f"take the amax over each row's normalized axes ({mode} scaling)"
            if other == TENSOR
            else "take the amax over the whole tensor (tensor scaling)",
        )
        yield _dynamic(
            exp,
            row_amax(normalized_input(problem), exp.axes, mode),
            fmt.max,
            "amax_of_input",
            "scale computed from the amax of the input x, not of the normalized output y",
            "compute the scale from the normalized (and scaled) output y that is quantized",
        )
        if problem.weight is not None or problem.bias is not None:
            yield _dynamic(
                exp,
                row_amax(_unscaled(problem), exp.axes, mode),
                fmt.max,
                "amax_before_affine",
                "scale computed from the amax of the normalized value before the weight (and bias) are applied",
                "compute the scale from the output after the weight and bias",
            )
        scale, lo, hi = scale_bounds(amax, fmt.max, None, exp.rtol, exp.atol)
        yield Guess(
            "no_min_scale",
            "no minimum scale: a row of zeros gets scale 0, and 0 / 0 = NaN",
            f"clamp the scale from below, max(amax / {fmt.max:g}, 1 / ({fmt.max:g} * 512)) as vLLM",
            scale,
            lo,
            hi,
            zero_scale=True,
        )
    for other_fmt in EVERY_FORMAT.values():
        if other_fmt != fmt:
            yield _format(exp, other_fmt)
    yield Guess(
        "no_saturation",
        f"no saturation clamp before the conversion: y/scale beyond +-{fmt.max:g} becomes "
        + ("NaN" if fmt.dtype == E4M3FN.dtype else "inf"),
        f"clamp y/scale to [-{fmt.max:g}, {fmt.max:g}] before converting to {fmt.dtype}",
        rounding=Rounding(fmt, saturate=False),
    )
    yield Guess(
        "round_toward_zero",
        "y/scale rounded toward zero (truncated) instead of to the nearest FP8 value, ties to even",
        f"round to nearest even, as a cast to torch.{fmt.dtype} does",
        rounding=Rounding(fmt, mode="zero"),
    )


def _maxes(fmt: Fp8Format) -> list[tuple[float, str]]:
    """The wrong fp8 max values to try: known ones and the format's value one step below its max."""
    below = float(from_ordinal(ordinal(np.array([fmt.max]), fmt) - 1, fmt)[0])
    found = dict(KNOWN_MAXES)
    found.setdefault(below, f"one {fmt.dtype} step below its largest value")
    return [(v, why) for v, why in found.items() if v != fmt.max]


def _dynamic(exp: Expected, amax: np.ndarray, fp8_max: float, id_: str, title: str, fix: str) -> Guess:
    """A dynamic scale from ``amax`` and ``fp8_max``, held to the expected scale's tolerance."""
    scale, lo, hi = scale_bounds(amax, fp8_max, 1.0 / (fp8_max * 512.0), exp.rtol, exp.atol)
    return Guess(id_, title, fix, scale, lo, hi)


def _format(exp: Expected, other: Fp8Format) -> Guess:
    """The whole conversion in another FP8 format: its max in the scale, its values."""
    fmt = exp.quant.fmt
    title = f"FP8 format {other.dtype} (largest value {other.max:g}) instead of {fmt.dtype} ({fmt.max:g})"
    fix = f"quantize to torch.{fmt.dtype} with its largest value {fmt.max:g}"
    if exp.quant.scale == STATIC:
        return Guess(f"format_{_short(other)}", title, fix, rounding=Rounding(other))
    scale, lo, hi = scale_bounds(
        row_amax(exp.y, exp.axes, exp.quant.scale), other.max, other.min_scale, exp.rtol, exp.atol
    )
    return Guess(f"format_{_short(other)}", title, fix, scale, lo, hi, rounding=Rounding(other))


def _one_ulp(exp: Expected, scale: np.ndarray) -> Guess:
    """The given static scale returned one float32 unit in the last place off, on the side the
    returned one lies."""
    s = exp.scale.astype(np.float32)
    with np.errstate(invalid="ignore"):
        toward = np.where(np.broadcast_to(scale, s.shape) > s, np.float32(np.inf), np.float32(-np.inf))
    off = np.nextafter(s, toward.astype(np.float32)).astype(np.float64)
    return Guess(
        "scale_one_ulp",
        "scale one float32 ulp off the static scale given (e.g. returned as 1 / (1 / scale))",
        "return the scale as given, not recomputed from its reciprocal",
        off,
        off,
        off,
    )


def _unscaled(problem: Problem) -> np.ndarray:
    """The normalized value before the affine: the reference output without weight and bias."""
    params = replace(problem.params, affine=False, variant=None, quant=None)
    return reference(replace(problem, params=params, weight=None, bias=None))["forward"]


def _norm_guesses(problem: Problem, exp: Expected, expected: dict[str, np.ndarray]) -> Iterator[Guess]:
    """The norm's own formula mistakes (normcheck.diagnosis.hypotheses, eps, axes, variance, affine,
    ...): the output each predicts, quantized as the case says."""
    plain_case = plain(problem, expected, {})
    ctx = Context(problem, expected, {})
    reduced = ctx if plain_case is None else Context(plain_case.problem, plain_case.expected, {})
    for hyp in HYPOTHESES:
        if hyp.family != FORMULA or hyp.id in DISTRIBUTED_ONLY:
            continue
        with np.errstate(all="ignore"):
            predictions = hyp.predict(ctx if hyp.on_case else reduced)
        for pred in predictions:
            y = pred.values.get("forward")
            if y is None or np.shape(y) != np.shape(exp.y):
                continue
            if exp.quant.scale == STATIC:
                yield Guess(hyp.id, pred.title, pred.fix, y=y, family=FORMULA)
                continue
            amax = row_amax(y, exp.axes, exp.quant.scale)
            fmt = exp.quant.fmt
            scale, lo, hi = scale_bounds(amax, fmt.max, fmt.min_scale, exp.rtol, exp.atol)
            yield Guess(hyp.id, pred.title, pred.fix, scale, lo, hi, y=y, family=FORMULA)


def _short(fmt: Fp8Format) -> str:
    """e4m3fn, e5m2, e4m3fnuz, e5m2fnuz: the dtype's name without float8_."""
    return fmt.dtype.removeprefix("float8_")
