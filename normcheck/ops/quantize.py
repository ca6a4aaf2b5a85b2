"""FP8 output quantization of a norm (vLLM's rms_norm_dynamic_per_token_quant,
rms_norm_static_fp8_quant, scaled_fp8_quant): the formats, the scale, the rounding and the rule
that decides which FP8 values a correct kernel may return.

The kernels compute, in float32 (vLLM csrc/quantization/fused_kernels/layernorm_utils.cuh and
csrc/quantization/w8a8/fp8/common.cu):

    scale = max(amax(|y|) / fp8_max, 1 / (fp8_max * 512))      dynamic: per row (token) or tensor
    q     = fp8(clamp(y / scale, -fp8_max, fp8_max))            rounded to nearest, ties to even

where y is the norm's output and a row is one index of the axes that are not normalized; a
static scale is given instead. Some kernels multiply by 1 / scale (vLLM's static and per-tensor
paths): that differs from dividing by a float32 rounding or two, which the rule below absorbs.

Which values are right: with v = y / scale and t the error a correct kernel may make on v (the
norm's tolerance on y, divided by the scale, plus four float32 roundings of v), every FP8 value
between fp8(v - t) and fp8(v + t) is. Where v is further than t from every rounding boundary
(the midpoint of two neighbouring FP8 values) that is the one value fp8(v); within t of one, its
two neighbours. Pure NumPy and ml_dtypes; imports nothing above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# what an implementation declares (Implementation.extensions) to be run on a quantized case;
# one that lacks it has a skip row
QUANTIZED = "fp8_quant"
# the checks of a quantized case: the FP8 output and its scale
QUANTIZED_CHECK, SCALE_CHECK = "quantized", "scale"

ROW, TENSOR, STATIC = "row", "tensor", "static"
SCALE_MODES = (ROW, TENSOR, STATIC)
# the ops with a quantized form: those that normalize the trailing axes of a token
QUANTIZED_OPS = ("rms", "ln")
# vLLM's minimum dynamic scale: 1 / (fp8_max * MIN_SCALE_DIVISOR) (min_scaling_factor)
MIN_SCALE_DIVISOR = 512.0
# A static scale is this fraction of the tensor's amax / fp8_max: a calibration a little small,
# so the largest values of y / scale (up to 1.25 fp8_max) must be clamped to fp8_max.
STATIC_HEADROOM = 0.8
# float32 roundings of v = y / scale a correct kernel may add beyond y's own error: the division,
# or a reciprocal and a product (vLLM's static path: x * (1 / scale)), with room to spare
V_ROUNDINGS = 4
U32 = 2.0**-24  # a float32 rounding: half its machine epsilon


@dataclass(frozen=True)
class Fp8Format:
    """An 8-bit float format: ``dtype`` is its name in torch and ml_dtypes."""

    name: str
    dtype: str
    max: float

    @property
    def np_type(self) -> type:
        import ml_dtypes  # only when an FP8 check runs

        return getattr(ml_dtypes, self.dtype)

    @property
    def min_scale(self) -> float:
        """vLLM's smallest dynamic scale, 1 / (max * 512), in float32."""
        return float(np.float32(1.0) / (np.float32(self.max) * np.float32(MIN_SCALE_DIVISOR)))


E4M3FN = Fp8Format("e4m3", "float8_e4m3fn", 448.0)  # OCP E4M3 (NVIDIA): no inf, one NaN
E5M2 = Fp8Format("e5m2", "float8_e5m2", 57344.0)  # IEEE-like: inf and NaNs
# AMD MI300's formats (exponent bias one higher, no negative zero): the mistake of using one for the other
E4M3FNUZ = Fp8Format("e4m3fnuz", "float8_e4m3fnuz", 240.0)
E5M2FNUZ = Fp8Format("e5m2fnuz", "float8_e5m2fnuz", 57344.0)
FORMATS: dict[str, Fp8Format] = {"e4m3": E4M3FN, "e5m2": E5M2}  # --quantize
EVERY_FORMAT: dict[str, Fp8Format] = {f.dtype: f for f in (E4M3FN, E5M2, E4M3FNUZ, E5M2FNUZ)}
# dtypes whose values can carry FP8 values exactly (each must then be one)
PLAIN_FLOATS = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class Quantization:
    """A quantized case: the FP8 ``format`` ("e4m3" or "e5m2") and the ``scale`` mode (ROW,
    TENSOR: dynamic, computed from y; STATIC: given)."""

    format: str
    scale: str = ROW

    @property
    def fmt(self) -> Fp8Format:
        return FORMATS[self.format]

    def label(self) -> str:
        return f"fp8 {self.format} {self.scale}"


@dataclass(frozen=True)
class Rounding:
    """How a kernel turns v = y / scale into FP8: to nearest, ties to even ("nearest") or toward
    zero ("zero"); clamped to +-max first (``saturate``) or not (beyond it: NaN or inf)."""

    fmt: Fp8Format
    mode: str = "nearest"
    saturate: bool = True


def to_fp8(v: np.ndarray, rounding: Rounding) -> np.ndarray:
    """``v`` rounded to ``rounding.fmt``, as float64 holding FP8 values (NaN and inf where the
    format gives them)."""
    fmt = rounding.fmt
    a = np.asarray(v, dtype=np.float64)
    if rounding.saturate:
        a = np.clip(a, -fmt.max, fmt.max)
    with np.errstate(over="ignore", invalid="ignore"):
        nearest = _to_float32_odd(a).astype(fmt.np_type).astype(np.float64)
        if rounding.mode == "nearest":
            return nearest
        # toward zero: one step back where rounding to nearest went past |v|
        finite = np.where(np.isfinite(nearest), nearest, 0.0)
        past = np.isfinite(nearest) & (np.abs(nearest) > np.abs(a))
        back = from_ordinal(ordinal(finite, fmt) - np.sign(finite).astype(np.int64), fmt)
        return np.where(past, back, nearest)


def _to_float32_odd(a: np.ndarray) -> np.ndarray:
    """``a`` in float32, rounded to odd: toward zero, the last bit set where inexact. ml_dtypes
    converts float64 through float32, and rounding twice to nearest is wrong just off a tie
    (303.999999999 would become 304.0, a tie, then 320 in e4m3fn, where 288 is nearest); rounding
    to odd first keeps every FP8 rounding of float64 right (float32 has 20 bits more)."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = a.astype(np.float32)
        past = np.isfinite(f) & (np.abs(f.astype(np.float64)) > np.abs(a))
        f = np.where(past, np.nextafter(f, np.float32(0.0)), f)
        inexact = np.isfinite(f) & (f.astype(np.float64) != a)
        bits = np.ascontiguousarray(f, dtype=np.float32).view(np.uint32)
        return np.where(inexact, (bits | np.uint32(1)).view(np.float32), f)


def ordinal(values: np.ndarray, fmt: Fp8Format) -> np.ndarray:
    """The position of each FP8 value among the format's values in order (0 for zero, negative
    below it): neighbouring values differ by 1. Values must be finite FP8 values of ``fmt``."""
    bits = np.asarray(values, dtype=np.float64).astype(fmt.np_type).view(np.uint8).astype(np.int64)
    magnitude = bits & 0x7F
    return np.where(bits & 0x80, -magnitude, magnitude)


def from_ordinal(positions: np.ndarray, fmt: Fp8Format) -> np.ndarray:
    """The FP8 values at ``positions`` (see ``ordinal``), as float64."""
    p = np.asarray(positions, dtype=np.int64)
    bits = np.where(p < 0, 0x80 | -p, p).astype(np.uint8)
    return bits.view(fmt.np_type).astype(np.float64)


def steps(a: np.ndarray, b: np.ndarray, fmt: Fp8Format) -> np.ndarray:
    """How many FP8 values apart ``a`` and ``b`` are (both finite FP8 values of ``fmt``)."""
    return np.abs(ordinal(a, fmt) - ordinal(b, fmt))


def representable(values: np.ndarray, fmt: Fp8Format) -> np.ndarray:
    """Elementwise: a finite value of ``fmt`` (values given in a wider float dtype must be)."""
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(a) & (np.abs(a) <= fmt.max) & (a.astype(fmt.np_type).astype(np.float64) == a)


def row_amax(y: np.ndarray, axes: tuple[int, ...], mode: str) -> np.ndarray:
    """max |y| per row (over the normalized ``axes``, kept as size-1 axes) or, for TENSOR and
    STATIC, over the whole tensor (every axis kept as size 1); 0 for an empty row."""
    a = np.abs(np.asarray(y, dtype=np.float64))
    over = axes if mode == ROW else tuple(range(a.ndim))
    return np.max(a, axis=over, keepdims=True, initial=0.0)


def dynamic_scale(amax: np.ndarray, fp8_max: float, min_scale: float | None) -> np.ndarray:
    """max(amax / fp8_max, min_scale) in float32, as the kernels compute it (``min_scale`` None:
    no minimum), returned as float64."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.asarray(amax, dtype=np.float64).astype(np.float32) / np.float32(fp8_max)
        if min_scale is not None:
            s = np.maximum(s, np.float32(min_scale))
    return np.asarray(s, dtype=np.float64)


def static_scale(y: np.ndarray, fmt: Fp8Format) -> np.ndarray:
    """The static scale a case is given: STATIC_HEADROOM * amax(|y|) / max in float32 (shape ()),
    never below the format's minimum dynamic scale."""
    amax = float(np.max(np.abs(np.asarray(y, dtype=np.float64)), initial=0.0))
    s = np.float32(STATIC_HEADROOM) * np.float32(amax) / np.float32(fmt.max)
    return np.array(max(float(s), fmt.min_scale))


def v_error(y_err: np.ndarray, scale: np.ndarray, v: np.ndarray) -> np.ndarray:
    """t: how far a correct kernel's y / scale may be from the reference's v, given the error it
    may make on y (``y_err``) and V_ROUNDINGS float32 roundings of v."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.asarray(y_err, dtype=np.float64) / np.abs(scale) + V_ROUNDINGS * U32 * np.abs(v)


def accepted(q: np.ndarray, v: np.ndarray, t: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Elementwise: ``q`` is one of the FP8 values a kernel rounding ``v`` +- ``t`` as
    ``rounding`` says may return, every value between the roundings of v - t and v + t (see the
    module's docstring). Where the roundings overflow (no saturation: NaN or inf), NaN and inf
    are accepted, and the finite values only up to the other end's rounding, if it has one."""
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = to_fp8(v - t, rounding), to_fp8(v + t, rounding)
        lo_open, hi_open = ~np.isfinite(lo), ~np.isfinite(hi)
        finite = np.isfinite(q) & (lo_open | (q >= lo)) & (hi_open | (q <= hi)) & ~(lo_open & hi_open)
    return finite | (~np.isfinite(q) & (lo_open | hi_open))


def format_problem(dtype: str | None, fmt: Fp8Format) -> str | None:
    """Why values returned in ``dtype`` cannot be ``fmt`` values, or None: another FP8 format or
    no float at all is wrong; ``fmt`` itself or a wider float (float16 .. float64) can carry them
    (each value is then checked to be one)."""
    if dtype == fmt.dtype or dtype in PLAIN_FLOATS:
        return None
    return f"returned {dtype}, not {fmt.dtype}"


# -- judging: which scales and which FP8 values a correct kernel may return ------------------

# float32 roundings a correct scale may differ by beyond its amax's error: amax rounded to
# float32 and the division (or a reciprocal and a product)
SCALE_ROUNDINGS = 4


def row_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one value per row: ``shape`` with the normalized ``axes`` of size 1."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def as_scale(got: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray | None:
    """A returned scale as one value per row (its size is the row count: any shape, e.g.
    (rows, 1)) or one value for the tensor (size 1), with the kept dims of ``row_shape``; None
    for any other size."""
    a = np.asarray(got, dtype=np.float64)
    per_row = row_shape(shape, axes)
    if a.size == int(np.prod(per_row, dtype=np.int64)):
        return a.reshape(per_row)
    if a.size == 1:
        return a.reshape((1,) * len(shape))
    return None


def scale_bounds(
    amax: np.ndarray, fp8_max: float, min_scale: float | None, rtol: float, atol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected dynamic scale, lowest and highest a correct kernel may return) for ``amax``,
    whose error in a correct kernel is at most atol + rtol * amax (the norm's tolerance on y at
    its largest value), plus SCALE_ROUNDINGS float32 roundings. Where amax / fp8_max falls below
    ``min_scale`` kernels differ in the minimum they clamp to (vLLM's 1 / (fp8_max * 512),
    others none or tiny ones): every positive scale from amax / fp8_max up to ``min_scale`` is
    accepted there."""
    scale = dynamic_scale(amax, fp8_max, min_scale)
    with np.errstate(invalid="ignore", over="ignore"):
        allowed = (atol + rtol * np.asarray(amax, dtype=np.float64)) / fp8_max + SCALE_ROUNDINGS * U32 * scale
        lo, hi = scale - allowed, scale + allowed
        if min_scale is not None:
            bare = dynamic_scale(amax, fp8_max, None)
            lo = np.where(bare < min_scale, np.maximum(bare - allowed, 0.0), lo)
    return scale, lo, hi


def scale_accepted(got: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Elementwise: a finite, positive scale within [lo, hi]."""
    g = np.asarray(got, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(g) & (g > 0) & (g >= lo) & (g <= hi)


def values_accepted(
    q: np.ndarray, y: np.ndarray, y_err: np.ndarray, scale: np.ndarray, rounding: Rounding, exact_format: bool
) -> np.ndarray:
    """Elementwise: ``q`` is what a correct kernel may return for ``y`` (error up to ``y_err``)
    quantized with ``scale`` (broadcast against y) as ``rounding`` says (see ``accepted``).
    ``exact_format``: q came in the format's own dtype; otherwise (a wider float) each finite
    value must also be one of the format's values."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = np.asarray(y, dtype=np.float64) / scale
    ok = accepted(q, v, v_error(y_err, scale, v), rounding)
    if exact_format:
        return ok
    q = np.asarray(q, dtype=np.float64)
    return ok & (~np.isfinite(q) | representable(q, rounding.fmt))


@dataclass(frozen=True)
class Expected:
    """What a correct kernel returns on one quantized case, and how far it may be off.

    ``y`` is the norm's reference output, each element of which a correct kernel may miss by
    ``y_err`` = atol + rtol * |y| (the forward check's tolerance); ``scale`` the expected scale
    (kept dims: one per row, or every axis 1), a correct one lying within [``lo``, ``hi``];
    ``axes`` the normalized axes (a row is one index of the others)."""

    quant: Quantization
    axes: tuple[int, ...]
    y: np.ndarray
    y_err: np.ndarray
    rtol: float
    atol: float
    scale: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def rounding(self) -> Rounding:
        return Rounding(self.quant.fmt)


def expectation(
    y: np.ndarray, axes: tuple[int, ...], quant: Quantization, rtol: float, atol: float, given: np.ndarray | None
) -> Expected:
    """The expectation for reference output ``y`` held to (``rtol``, ``atol``): a dynamic scale
    from y's amax (``scale_bounds``), or the ``given`` static one, exactly."""
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        y_err = atol + rtol * np.abs(y)
    if quant.scale == STATIC:
        if given is None:
            raise ValueError("a static scale must be given")
        s = np.asarray(given, dtype=np.float64).reshape((1,) * y.ndim)
        return Expected(quant, axes, y, y_err, rtol, atol, s, s, s)
    fmt = quant.fmt
    scale, lo, hi = scale_bounds(row_amax(y, axes, quant.scale), fmt.max, fmt.min_scale, rtol, atol)
    return Expected(quant, axes, y, y_err, rtol, atol, scale, lo, hi)


__all__ = [
    "E4M3FN",
    "E4M3FNUZ",
    "E5M2",
    "E5M2FNUZ",
    "EVERY_FORMAT",
    "FORMATS",
    "PLAIN_FLOATS",
    "QUANTIZED",
    "QUANTIZED_CHECK",
    "QUANTIZED_OPS",
    "ROW",
    "SCALE_CHECK",
    "SCALE_MODES",
    "STATIC",
    "TENSOR",
    "Expected",
    "Fp8Format",
    "Quantization",
    "Rounding",
    "accepted",
    "as_scale",
    "dynamic_scale",
    "expectation",
    "format_problem",
    "from_ordinal",
    "ordinal",
    "representable",
    "row_amax",
    "row_shape",
    "scale_accepted",
    "scale_bounds",
    "static_scale",
    "steps",
    "to_fp8",
    "v_error",
    "values_accepted",
]
