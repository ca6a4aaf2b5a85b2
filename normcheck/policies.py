"""Named precision policies: where real models' RMS norms round, each a small declarative record,
and the exact NumPy emulation of a policy with the rounding band an implementation that follows
it may land in.

The float64 reference says what RMS norm *is*; a policy says how one model's code *computes* it
in finite precision: the dtype the statistics are computed in, where the result is cast back to
the storage dtype (before or after the weight multiply), the dtype the weight is stored in,
where Gemma's offset 1 + w is added, and the output dtype PyTorch's type promotion gives.
Checked against the models' own code (huggingface/transformers):

- ``LlamaRMSNorm`` (modeling_llama.py): ``hidden_states.to(float32)``, variance and
  ``hidden_states * torch.rsqrt(variance + eps)`` in float32, then
  ``self.weight * hidden_states.to(input_dtype)``: cast back *before* the weight multiply, the
  multiply in the dtype torch promotes weight and input to.
- ``GemmaRMSNorm`` (modeling_gemma.py): ``output = self._norm(x.float())``,
  ``output * (1.0 + self.weight.float())`` in float32, ``.type_as(x)`` *after* the multiply.
- ``T5LayerNorm`` (modeling_t5.py): the variance from ``hidden_states.to(float32)``, but
  ``hidden_states * torch.rsqrt(...)`` multiplies the *input-dtype* tensor by the float32 rsqrt
  (promoted: float32 for half input, float64 for float64), cast to the weight's dtype only when
  the weight is float16/bfloat16, then ``self.weight * hidden_states``.
- native: every step in the input dtype (Liger-Kernel's ``casting_mode="none"``; plain PyTorch
  ops on half tensors), the sums accumulated wider as PyTorch's reductions do.
- fp32-weight: the weight kept in float32 (master weights), computed in float32, the output
  cast to the input dtype at the end: TransformerEngine's RMSNorm kernel (``compute_t``
  float, ``gamma`` loaded as float, ``if (zero_centered_gamma) g += 1`` in float, ``output_t``
  at the store), as Megatron-core uses it; its zero-centered gamma is Gemma's offset.

**The emulation rule.** Every intermediate is rounded to the dtype the policy says, each
elementwise step once (a product of two stored values is exact in float64, so rounding it is
exactly what one IEEE operation does); the sum of squares is computed exactly (a float64 sum of
values that are exact in float64) and the mean rounded *once* to the compute dtype. Real kernels
sum in their own order in float32 (float64 for float64 compute) and so land a few roundings
away; that difference, and nothing else, is the allowance: see ``reduction_bound``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any

import numpy as np

from normcheck.dtypes import EPS, HALF, quantize
from normcheck.names import POLICY_NAMES

FLOAT32 = "float32"
INPUT = "input"  # the input's dtype (for the weight: stored as the model's other tensors)
BEFORE, AFTER = "before the weight multiply", "after the weight multiply"
TO_INPUT, TO_HALF_WEIGHT = "input", "half weight"  # what a cast before the weight rounds to
PROMOTED = "promoted"  # the output dtype is torch's promotion of the weight's and the cast value's
GEMMA = "gemma"  # the op variant y = xhat * (1 + w) (normcheck.ops.rms_norm.GEMMA)
REDUCTION = (
    "the sum of squares exact (float64), the mean rounded once to the compute dtype; allowed: a sum in "
    "float32 (float64 for float64 compute) in any order up to ceil(log2 n) + ceil(sqrt n) levels deep"
)


@dataclass(frozen=True)
class Policy:
    """Where one model's RMS norm rounds, declared; ``emulate`` computes it exactly as declared.

    compute: the dtype of the statistics and of x * rsqrt: "float32", or "input" (native).
    scale_from: "compute" (x cast to the compute dtype, then times rsqrt) or "input" (T5: the
    input-dtype x times the float32 rsqrt, in the dtype torch promotes the two to).
    cast: where the value is rounded back: "before weight" (then the weight multiply, rounded to
    the promoted dtype) or "after weight" (the product computed in the compute dtype, rounded to
    the input dtype at the end).
    cast_to: with a cast before the weight, what it rounds to: "input" (Llama's input_dtype) or
    "half weight" (T5: the weight's dtype when it is float16/bfloat16; no cast otherwise).
    weight: the dtype the weight is stored in: "input" or "float32".
    offset: Gemma's 1 + w, added in "float32" (1.0 + w.float()) or in the "input" dtype; None: the
    policy has no offset (it checks plain RMS norm only).
    output: "input" (cast back at the end, after any cast before the multiply too) or "promoted"
    (torch's promotion of the weight and the value cast before the multiply, not cast again).
    variants: the RMS norm variants the policy covers (None: plain, "gemma": the offset).
    """

    name: str
    compute: str
    scale_from: str
    cast: str
    cast_to: str
    weight: str
    offset: str | None
    output: str
    variants: tuple[str | None, ...]
    source: str
    reduction: str = REDUCTION
    ops: tuple[str, ...] = ("rms",)

    def __post_init__(self) -> None:
        if self.cast == AFTER and self.output != INPUT:
            raise ValueError(f"policy {self.name}: a cast after the weight multiply is a cast to the input dtype")
        if (self.offset is None) == (GEMMA in self.variants):
            raise ValueError(f"policy {self.name}: the gemma variant needs an offset precision, and only it")

    def covers(self, op: str, variant: str | None) -> bool:
        return op in self.ops and variant in self.variants

    def coverage(self) -> str:
        """The op and variants the policy checks, in words and flags."""
        return " and ".join("--op rms" + (f" --variant {v}" if v else "") for v in self.variants)

    def weight_dtype(self, dtype: str) -> str:
        """The dtype the weight is stored in for ``dtype`` input."""
        return FLOAT32 if self.weight == FLOAT32 else dtype

    def formula(self) -> str:
        """The policy as one line of pseudo-code (``normcheck conventions --policies``)."""
        c = "x.float()" if self.compute == FLOAT32 else "x"
        r = f"r = rsqrt(mean({c}²) + eps) in {'float32' if self.compute == FLOAT32 else 'the input dtype'}"
        xh = f"{c} * r" if self.scale_from == "compute" else "x * r (promoted)"
        w = "w" if self.offset is None else "(1 + w)" if None not in self.variants else "w [or (1 + w): gemma]"
        if self.cast == AFTER:
            return f"{r}; y = ({xh} * {w}).to(input dtype)"
        to = "input dtype" if self.cast_to == TO_INPUT else "w's dtype if half"
        return f"{r}; y = {w} * ({xh}).to({to})"

    def as_dict(self) -> dict[str, Any]:
        """A flat record for ``normcheck conventions --policies``."""
        return {
            "policy": self.name,
            "covers": self.coverage(),
            "compute": self.compute if self.compute == FLOAT32 else "input dtype",
            "x * rsqrt from": "x in the compute dtype" if self.scale_from == "compute" else "x in its own dtype",
            "cast back": self.cast if self.cast == AFTER else f"{self.cast}, to the {_cast_words(self.cast_to)}",
            "weight stored in": "float32" if self.weight == FLOAT32 else "input dtype",
            "offset 1 + w in": {None: "-", FLOAT32: "float32", INPUT: "input dtype"}[self.offset],
            "output": "input dtype" if self.output == INPUT else "torch's promotion of weight and cast value",
            "reduction": self.reduction,
            "formula": self.formula(),
            "source": self.source,
        }


def _cast_words(cast_to: str) -> str:
    return "input dtype" if cast_to == TO_INPUT else "weight's dtype when it is float16/bfloat16"


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(
            "llama",
            compute=FLOAT32,
            scale_from="compute",
            cast=BEFORE,
            cast_to=TO_INPUT,
            weight=INPUT,
            offset=None,
            output=PROMOTED,
            variants=(None,),
            source="transformers LlamaRMSNorm: self.weight * hidden_states.to(input_dtype)",
        ),
        Policy(
            "gemma",
            compute=FLOAT32,
            scale_from="compute",
            cast=AFTER,
            cast_to=TO_INPUT,
            weight=INPUT,
            offset=FLOAT32,
            output=INPUT,
            variants=(GEMMA,),
            source="transformers GemmaRMSNorm: (output * (1.0 + self.weight.float())).type_as(x)",
        ),
        Policy(
            "t5",
            compute=FLOAT32,
            scale_from=INPUT,
            cast=BEFORE,
            cast_to=TO_HALF_WEIGHT,
            weight=INPUT,
            offset=None,
            output=PROMOTED,
            variants=(None,),
            source="transformers T5LayerNorm: hidden_states * rsqrt(variance), .to(weight.dtype) if half, "
            "then self.weight * hidden_states",
        ),
        Policy(
            "native",
            compute=INPUT,
            scale_from="compute",
            cast=AFTER,
            cast_to=TO_INPUT,
            weight=INPUT,
            offset=INPUT,
            output=INPUT,
            variants=(None, GEMMA),
            source="every op in the input dtype (Liger-Kernel casting_mode='none'; plain torch ops on half tensors)",
        ),
        Policy(
            "fp32-weight",
            compute=FLOAT32,
            scale_from="compute",
            cast=AFTER,
            cast_to=TO_INPUT,
            weight=FLOAT32,
            offset=FLOAT32,
            output=INPUT,
            variants=(None, GEMMA),
            source="TransformerEngine RMSNorm (Megatron-core): float32 weight and compute, zero_centered_gamma "
            "adds 1 in float32, output_t at the store",
        ),
    )
}
assert tuple(POLICIES) == POLICY_NAMES


def policy(name: str) -> Policy:
    """The policy called ``name``; ValueError naming the policies for any other."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    return POLICIES[name]


def promote(a: str, b: str) -> str:
    """The dtype torch's type promotion gives a floating tensor of ``a`` with one of ``b``."""
    if a == b:
        return a
    if {a, b} == set(HALF):
        return FLOAT32
    rank = {"float16": 0, "bfloat16": 0, "float32": 1, "float64": 2}
    return a if rank[a] > rank[b] else b


# -- the emulation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Emulated:
    """A policy's output on one input: ``center`` is the emulation itself; every implementation
    that follows the policy returns, element by element, a value in [``low``, ``high``] (values
    of ``dtype``, held in float64)."""

    center: np.ndarray
    low: np.ndarray
    high: np.ndarray
    dtype: str

    def outside(self, got: np.ndarray) -> np.ndarray:
        """Where ``got`` is outside the band (NaN only where the policy gives NaN too)."""
        got = np.asarray(got, dtype=np.float64)
        nan_here = np.isnan(self.center)
        with np.errstate(invalid="ignore"):
            inside = (got >= self.low) & (got <= self.high)
        return np.where(nan_here, ~np.isnan(got), ~inside)


def accumulation_dtype(compute: str) -> str:
    """The dtype a kernel sums the squares in: float64 for float64 compute, float32 otherwise
    (PyTorch accumulates float16/bfloat16 reductions in float32)."""
    return "float64" if compute == "float64" else FLOAT32


def reduction_bound(n: int, compute: str) -> float:
    """The relative difference the policy allows between a kernel's mean of squares and the exact one.

    A sum of n non-negative terms accumulated in a tree of depth d errs by at most d·u relative
    (u: half an ulp of the accumulation dtype; Higham, Accuracy and Stability of Numerical
    Algorithms, §4.2, with no cancellation since every term is positive). The depth allowed is
    ceil(log2 n) + ceil(sqrt n): any pairwise or tree order (PyTorch's cascade sums, GPU block
    reductions, Triton's tl.sum) plus a per-thread serial run of up to sqrt(n) terms; two more
    roundings for the squares (a fused multiply-add skips them) and the division by n; and the
    emulation's own float64 sum, (n - 1)·2^-53 at most, and the float64 roundings of this band's
    own arithmetic.
    """
    if n <= 0:
        return 0.0
    u = EPS[accumulation_dtype(compute)] / 2
    depth = math.ceil(math.log2(n)) + math.ceil(math.sqrt(n)) if n > 1 else 0
    d = depth + 3
    return d * u / (1 - d * u) + (n + 3) * 2.0**-53  # + the float64 sum, the scaling and the division here


def rsqrt_bound(compute: str) -> float:
    """The relative error allowed in a kernel's rsqrt before it is rounded to the compute dtype:
    four roundings of the accumulation dtype (CUDA's rsqrtf is within 2 ulps, 1/sqrt makes two
    roundings), plus float64's own. A kernel may also take 1 / sqrt with the root rounded to the
    compute dtype first, as PyTorch's CPU rsqrt of a float16/bfloat16 tensor does (``_rsqrt``)."""
    return 4 * EPS[accumulation_dtype(compute)] / 2 + 2.0**-50


def emulate(
    pol: Policy,
    x: np.ndarray,
    weight: np.ndarray | None,
    eps: float,
    normalized_ndim: int,
    dtype: str,
    gemma: bool = False,
    weight_dtype: str | None = None,
) -> Emulated:
    """RMS norm of ``x`` (values of ``dtype``, held in float64) over its trailing
    ``normalized_ndim`` dims as ``pol`` computes it: every intermediate rounded to the dtype the
    policy says, the mean of squares exact and rounded once. ``weight`` (values of ``dtype``)
    is stored in ``weight_dtype`` (default: the policy's); ``gemma`` scales by 1 + weight.

    The band: the statistics of a kernel that follows the policy differ from the emulation's
    only by the order and precision of its sum of squares (``reduction_bound``), the precision
    of eps (the compute or the accumulation dtype) and of its rsqrt (``rsqrt_bound``, or 1/sqrt
    rounded twice in the compute dtype); every
    later step is one rounding of a monotone function of rsqrt, so the extremes of the output are
    the emulation run with the extreme statistics.
    """
    if gemma and pol.offset is None:
        raise ValueError(f"policy {pol.name} has no offset: it cannot compute Gemma's 1 + w")
    x = np.asarray(x, dtype=np.float64)
    compute = FLOAT32 if pol.compute == FLOAT32 else dtype
    acc = accumulation_dtype(compute)
    wdt = weight_dtype or pol.weight_dtype(dtype)
    out_dtype = _output_dtype(pol, dtype, compute, wdt, gemma, weight is not None)
    if x.size == 0:
        return Emulated(x.copy(), x.copy(), x.copy(), out_dtype)
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    with np.errstate(all="ignore"):
        xs = quantize(x, compute)
        squares = quantize(xs * xs, compute)
        total = squares.sum(axis=axes, keepdims=True)  # exact to far below a float32 rounding

        def tail(r: np.ndarray) -> np.ndarray:
            return _after_statistics(pol, x, xs, r, weight, dtype, compute, wdt, gemma)

        eps_acc, eps_compute = (float(quantize(np.array([eps]), d)[0]) for d in (acc, compute))
        if compute == "float64":  # float64 arithmetic cannot round float64 steps exactly: rationals can
            r = _exact_rsqrt_float64(squares, axes, eps)
        else:
            r = _rsqrt(total, n, eps_acc, compute, acc, 0.0, 0.0, "center")
        rho = reduction_bound(n, compute)
        rho_r = rsqrt_bound(compute)
        r_low = _rsqrt(total, n, max(eps_acc, eps_compute), compute, acc, rho, -rho_r, "high")
        r_high = _rsqrt(total, n, min(eps_acc, eps_compute), compute, acc, -rho, rho_r, "low")
        center, a, b = tail(r), tail(r_low), tail(r_high)
    return Emulated(center, np.fmin(a, b), np.fmax(a, b), out_dtype)


def _exact_rsqrt_float64(squares: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    """For float64 compute, per normalized slice: the sum of ``squares`` exact, the mean, + eps
    and rsqrt each rounded once to float64, in rational arithmetic (``float(Fraction)`` rounds
    correctly; rsqrt from an integer square root 200 bits past the binary point)."""
    moved = np.moveaxis(squares, axes, tuple(range(squares.ndim - len(axes), squares.ndim)))
    lead = moved.shape[: moved.ndim - len(axes)]
    rows = moved.reshape(int(np.prod(lead, dtype=np.int64)), -1)
    out = np.empty(rows.shape[0], dtype=np.float64)
    for i, row in enumerate(rows.tolist()):
        if not all(map(math.isfinite, row)):  # inf and NaN go through as float64 takes them
            with np.errstate(all="ignore"):
                out[i] = 1.0 / np.sqrt(np.float64(math.fsum(row)) / len(row) + eps)
            continue
        mean = float(sum(map(Fraction, row), Fraction(0)) / len(row))
        var = Fraction(float(Fraction(mean) + Fraction(eps)))
        if var == 0:
            out[i] = math.inf
            continue
        k = 200
        scaled = var.denominator * 4**k // var.numerator
        root = math.isqrt(scaled)
        exact = root * root * var.numerator == var.denominator * 4**k
        out[i] = float(Fraction(root, 2**k) if exact else Fraction(2 * root + 1, 2 ** (k + 1)))
    return out.reshape(*lead, *(1,) * len(axes))


def _rsqrt(
    total: np.ndarray, n: int, eps: float, compute: str, acc: str, rho: float, rho_r: float, side: str
) -> np.ndarray:
    """1 / sqrt(mean + eps) in the compute dtype, from the exact sum of squares moved by ``rho``
    (relative) and the rsqrt by ``rho_r``. ``side``: "center" rounds once per step, as the
    emulation rule says; "low"/"high" take the further of the single rounding and a rounding
    through the accumulation dtype first (PyTorch adds eps in float32 before storing a half
    variance), since a kernel may do either."""
    mean = quantize(total * (1 + rho) / max(n, 1), compute)
    summed = mean + eps
    var = quantize(summed, compute)
    if side == "center":
        return quantize(1.0 / np.sqrt(var), compute)
    through = quantize(quantize(summed, acc), compute)
    var = np.fmax(var, through) if side == "high" else np.fmin(var, through)
    once = quantize((1.0 / np.sqrt(var)) * (1 + rho_r), compute)
    # 1 / sqrt with the root rounded to the compute dtype first: PyTorch's CPU rsqrt of half tensors
    twice = quantize(1.0 / quantize(np.sqrt(var), compute), compute)
    return np.fmin(once, twice) if side == "high" else np.fmax(once, twice)


def _after_statistics(
    pol: Policy,
    x: np.ndarray,
    xs: np.ndarray,
    r: np.ndarray,
    weight: np.ndarray | None,
    dtype: str,
    compute: str,
    wdt: str,
    gemma: bool,
) -> np.ndarray:
    """The output from rsqrt ``r`` on: x * r, the scale, the cast back, each rounded as declared."""
    if pol.scale_from == "compute":
        xh, xh_dtype = quantize(xs * r, compute), compute
    else:  # T5: the input-dtype tensor times the float32 rsqrt, in their promoted dtype
        xh_dtype = promote(dtype, compute)
        xh = quantize(x * r, xh_dtype)
    scale, scale_dtype = _scale(pol, weight, dtype, wdt, gemma)
    if pol.cast == AFTER:
        if scale is None:
            return quantize(xh, dtype)
        product_dtype = promote(xh_dtype, scale_dtype)
        return quantize(quantize(xh * scale, product_dtype), dtype)
    cast_dtype = _cast_dtype(pol, dtype, wdt, xh_dtype)
    v = quantize(xh, cast_dtype)
    y = v if scale is None else quantize(scale * v, promote(scale_dtype, cast_dtype))
    return quantize(y, dtype) if pol.output == INPUT else y


def _scale(pol: Policy, weight: np.ndarray | None, dtype: str, wdt: str, gemma: bool) -> tuple[np.ndarray | None, str]:
    """What x * r is multiplied by and its dtype: the stored weight, or Gemma's 1 + w in the
    offset's precision (``1.0 + weight.float()``, or ``1 + weight.to(input dtype)``)."""
    if weight is None:
        return None, dtype
    w = quantize(weight, wdt)
    if not gemma:
        return w, wdt
    offset_dtype = FLOAT32 if pol.offset == FLOAT32 else dtype
    return quantize(1.0 + quantize(w, offset_dtype), offset_dtype), offset_dtype


def _cast_dtype(pol: Policy, dtype: str, wdt: str, xh_dtype: str) -> str:
    """What a cast before the weight multiply rounds to: the input dtype (Llama), or the weight's
    dtype when it is a half type and no cast otherwise (T5)."""
    if pol.cast_to == TO_INPUT:
        return dtype
    return wdt if wdt in HALF else xh_dtype


def _output_dtype(pol: Policy, dtype: str, compute: str, wdt: str, gemma: bool, has_weight: bool) -> str:
    if pol.output == INPUT:
        return dtype
    xh_dtype = compute if pol.scale_from == "compute" else promote(dtype, compute)
    cast_dtype = _cast_dtype(pol, dtype, wdt, xh_dtype)
    if not has_weight:
        return cast_dtype
    scale_dtype = (FLOAT32 if pol.offset == FLOAT32 else dtype) if gemma else wdt
    return promote(scale_dtype, cast_dtype)


# -- one step changed: what a kernel that claims a policy but rounds elsewhere computes ----------

# Each field a kernel most often gets wrong, and its other value, in words for the message.
MUTATIONS: dict[str, dict[Any, str]] = {
    "cast": {
        BEFORE: "the cast to the input dtype before the weight multiply",
        AFTER: "the cast after the weight multiply",
    },
    "offset": {FLOAT32: "the offset 1 + w added in float32", INPUT: "the offset 1 + w added in the input dtype"},
    "compute": {FLOAT32: "the statistics computed in float32", INPUT: "the statistics computed in the input dtype"},
}


def mutations(pol: Policy) -> list[tuple[str, Policy]]:
    """``pol`` with one declared step done the other way, each with its words: "gemma with the
    offset 1 + w added in the input dtype". Only changes that make a valid record."""
    out = []
    for name, values in MUTATIONS.items():
        current = getattr(pol, name)
        if current is None:
            continue
        for value, words in values.items():
            if value == current:
                continue
            changes: dict[str, Any] = {name: value}
            if name == "cast":  # the final cast back stays where the policy has one
                changes["output"] = INPUT if value == AFTER else pol.output
                changes["cast_to"] = TO_INPUT
            label = f"{pol.name} with {words}"
            out.append((label, replace(pol, name=label, **changes)))
    return out


FIELD_NAMES = tuple(f.name for f in fields(Policy))
