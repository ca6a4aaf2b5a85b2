"""The precision policies' records and their emulation: values checked by hand, an independent
step-by-step re-computation in exact rational arithmetic (fractions.Fraction, rounding to
nearest even written out), and the band against sums of squares done as kernels do them."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from normcheck.dtypes import EPS, quantize
from normcheck.names import POLICY_NAMES
from normcheck.policies import (
    AFTER,
    BEFORE,
    FLOAT32,
    GEMMA,
    POLICIES,
    emulate,
    mutations,
    policy,
    promote,
    reduction_bound,
)

# significand bits (with the implicit one) and smallest normal exponent of each dtype
FORMATS = {"float64": (53, -1022), "float32": (24, -126), "float16": (11, -14), "bfloat16": (8, -126)}


def rne(q: Fraction, dtype: str) -> Fraction:
    """``q`` rounded to the nearest value of ``dtype``, ties to even (no overflow in these tests)."""
    if q == 0:
        return Fraction(0)
    bits, emin = FORMATS[dtype]
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    scale = Fraction(2) ** (bits - 1 - max(e, emin))
    m = a * scale
    n = m.numerator // m.denominator
    rem = m - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2):
        n += 1
    return (1 if q > 0 else -1) * n / scale


def rne_rsqrt(v: Fraction, dtype: str) -> Fraction:
    """1 / sqrt(v) rounded to ``dtype``: from floor(sqrt(1/v) * 2^k) with k = 400 bits, exact for
    a perfect square and far past any rounding boundary otherwise."""
    k = 400
    t = Fraction(v.denominator * 4**k, v.numerator)
    root = math.isqrt(t.numerator // t.denominator)
    exact = Fraction(root, 2**k) if Fraction(root * root) == t else Fraction(2 * root + 1, 2 ** (k + 1))
    return rne(exact, dtype)


def reference(name: str, x: list[float], w: list[float], eps: float, dtype: str, gemma: bool) -> list[Fraction]:
    """The policy's source code, one statement at a time, in exact arithmetic rounded where
    PyTorch rounds (the weight stored in the input dtype, as for llama, gemma, t5 and native)."""
    f = [Fraction(v) for v in x]
    ws = [Fraction(v) for v in w]
    compute = dtype if name == "native" else FLOAT32
    xs = [rne(a, compute) for a in f]
    ms = rne(sum(rne(a * a, compute) for a in xs) / len(xs), compute)
    eps_given = rne(Fraction(eps), "float64" if compute == "float64" else FLOAT32)  # PyTorch's scalar precision
    r = rne_rsqrt(rne(ms + eps_given, compute), compute)
    # T5: hidden_states (input dtype) * rsqrt (float32), promoted; the others: x cast to the compute dtype
    pairs, product_dtype = (f, promote(dtype, FLOAT32)) if name == "t5" else (xs, compute)
    xh = [rne(a * r, product_dtype) for a in pairs]
    if name in ("llama", "t5"):  # self.weight * hidden_states.to(input dtype / half weight's dtype)
        return [rne(wi * rne(h, dtype), dtype) for wi, h in zip(ws, xh, strict=True)]
    if gemma:
        offset = FLOAT32 if name != "native" else dtype
        scale = [rne(1 + rne(wi, offset), offset) for wi in ws]  # 1.0 + weight.float()
    else:
        scale = ws
    product = FLOAT32 if name != "native" else dtype
    return [rne(rne(h * s, product), dtype) for h, s in zip(xh, scale, strict=True)]


def test_names_and_records():
    assert tuple(POLICIES) == POLICY_NAMES
    for p in POLICIES.values():
        record = p.as_dict()
        assert record["policy"] == p.name and record["formula"] and record["source"]
        assert p.covers("rms", None) == (None in p.variants)
        assert not p.covers("ln", None)
    assert POLICIES["gemma"].variants == (GEMMA,)
    assert POLICIES["llama"].cast == BEFORE and POLICIES["gemma"].cast == AFTER
    assert POLICIES["fp32-weight"].weight_dtype("bfloat16") == "float32"
    assert POLICIES["llama"].weight_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="unknown policy 'x'; choose from llama"):
        policy("x")


def test_promotion_is_torchs():
    assert promote("bfloat16", "float16") == "float32"
    assert promote("bfloat16", "float32") == "float32"
    assert promote("float64", "float32") == "float64"
    assert promote("float16", "float16") == "float16"


# x = [1, 2, 2, 4]: mean of squares 25/4, rsqrt 0.4 exactly, in float32 0.4000000059604645. Llama
# rounds x * r to bfloat16 first: 0.4 -> 205/512 = 0.400390625, times w = 0.65625 is 0.26275634...,
# 134.53 units of 2^-9 in bfloat16, so 135/512 = 0.263671875. Cast after the multiply (fp32-weight):
# 0.65625 * 0.4000000059604645 = 0.26250000391..., 134.4 units, so 134/512 = 0.26171875. native
# computes r = 0.400390625 in bfloat16 and lands where Llama does; T5's x * r in float32, then the
# cast to the (bfloat16) weight's dtype, is Llama's arithmetic.
HAND = {"llama": 0.263671875, "t5": 0.263671875, "native": 0.263671875, "fp32-weight": 0.26171875}


@pytest.mark.parametrize("name", HAND)
def test_hand_checked_values(name):
    x, w = np.array([[1.0, 2.0, 2.0, 4.0]]), np.array([0.65625, 1.0, 1.0, 1.0])
    out = emulate(POLICIES[name], x, w, 0.0, 1, "bfloat16")
    assert out.center[0, 0] == HAND[name]
    assert out.low[0, 0] == out.high[0, 0] == HAND[name]  # far from any bfloat16 rounding boundary
    assert out.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("name", "want"), [("gemma", 0.26171875), ("native", 0.263671875), ("fp32-weight", 0.26171875)]
)
def test_hand_checked_gemma_values(name, want):
    """The same numbers with Gemma's weight stored as an offset: 1 + (-0.34375) = 0.65625."""
    x, w = np.array([[1.0, 2.0, 2.0, 4.0]]), np.array([-0.34375, 0.0, 0.0, 0.0])
    assert emulate(POLICIES[name], x, w, 0.0, 1, "bfloat16", gemma=True).center[0, 0] == want


CASES = [
    (name, dtype, gemma)
    for name in ("llama", "gemma", "t5", "native")
    for dtype in ("float32", "float16", "bfloat16", "float64")
    for gemma in ((True,) if name == "gemma" else (False, True) if name == "native" else (False,))
]


@pytest.mark.parametrize(("name", "dtype", "gemma"), CASES)
def test_emulation_is_the_policys_source_in_exact_arithmetic(name, dtype, gemma):
    rng = np.random.default_rng(7)
    x = quantize(3 * rng.standard_normal((3, 12)), dtype)
    w = quantize((0.0 if gemma else 1.0) + 0.5 * rng.standard_normal(12), dtype)
    eps = 1e-5
    out = emulate(POLICIES[name], x, w, eps, 1, dtype, gemma=gemma)
    for row in range(3):
        want = reference(name, list(x[row]), list(w), eps, dtype, gemma)
        assert [Fraction(v) for v in out.center[row]] == want, row
    assert np.all((out.low <= out.center) & (out.center <= out.high))


def test_the_band_is_exact_almost_everywhere_in_half_precision():
    """The statistics' allowance is a few float32 ulps: after rounding to bfloat16 it moves an
    element only where it sits within that distance of a rounding boundary."""
    rng = np.random.default_rng(1)
    x = quantize(rng.standard_normal((64, 256)), "bfloat16")
    w = quantize(1 + 0.5 * rng.standard_normal(256), "bfloat16")
    out = emulate(POLICIES["llama"], x, w, 1e-6, 1, "bfloat16")
    widened = np.mean(out.high > out.low)
    assert 0 < widened < 0.01
    spacing = np.abs(out.high - out.low)
    assert np.all(spacing <= 2 * np.abs(out.center) * 2.0**-7 + 1e-30)  # at most one bfloat16 step either way


@pytest.mark.parametrize("n", [7, 256, 4096])
def test_reduction_bound_holds_for_float32_sums_in_kernel_orders(n):
    """Pairwise (NumPy's float32 sum) and blocked serial sums of float32 squares stay within the
    bound; a plain serial sum over all n terms typically does too (its error grows as sqrt(n))."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((32, n)).astype(np.float32)
    sq = (x * x).astype(np.float32)
    exact = np.array([math.fsum(map(float, row)) for row in sq]) / n
    bound = reduction_bound(n, "float32")
    pairwise = sq.sum(axis=1, dtype=np.float32) / np.float32(n)
    block = max(1, math.isqrt(n))
    partial = [np.cumsum(sq[:, i : i + block], axis=1, dtype=np.float32)[:, -1] for i in range(0, n, block)]
    blocked = np.sum(np.stack(partial, axis=1), axis=1, dtype=np.float32) / np.float32(n)
    serial = np.cumsum(sq, axis=1, dtype=np.float32)[:, -1] / np.float32(n)
    for got in (pairwise, blocked, serial):
        assert np.max(np.abs(got.astype(np.float64) / exact - 1)) <= bound
    assert bound < 100 * EPS["float32"]  # still a few ulps: far below a half-precision step


def test_mutations_change_one_declared_step():
    labels = [label for label, _ in mutations(POLICIES["gemma"])]
    assert "gemma with the cast to the input dtype before the weight multiply" in labels
    assert "gemma with the offset 1 + w added in the input dtype" in labels
    for label, p in mutations(POLICIES["llama"]):
        assert p.name == label and p.offset is None
    assert all(p.offset is None for _, p in mutations(POLICIES["t5"]))


def test_empty_and_special_inputs():
    out = emulate(POLICIES["llama"], np.zeros((0, 8)), np.ones(8), 1e-6, 1, "bfloat16")
    assert out.center.shape == (0, 8)
    # float16 squares of +-6e4 overflow in the native policy: rsqrt(inf) is 0, and so is the output
    x = np.full((1, 4), 6e4)
    native = emulate(POLICIES["native"], x, np.ones(4), 1e-6, 1, "float16")
    assert np.all(native.center == 0)
    assert not native.outside(np.zeros((1, 4))).any()
    assert native.outside(np.full((1, 4), np.nan)).all()
    llama = emulate(POLICIES["llama"], x, np.ones(4), 1e-6, 1, "float16")
    assert np.all(llama.center == 1)
