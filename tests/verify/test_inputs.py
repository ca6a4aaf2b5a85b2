"""make_problem: seeded, read-only, exactly representable inputs with each kind's property."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.dtypes import DTYPES, quantize
from normcheck.ops import OPS, OpParams
from normcheck.problem import case_seed
from normcheck.verify.inputs import CONSTANT_VALUE, HALF_RANGE, KINDS, LARGE_MEAN, TRAINING_STEPS, make_problem

EPS = 1e-5

# one case per op, shapes big enough for sample statistics to mean something
CASES = [
    ("bn", (8, 3, 4, 4), OpParams(mode="train", running_stats=True)),
    ("bn", (8, 3, 4, 4), OpParams(mode="eval", running_stats=True)),
    ("ln", (4, 6, 32), OpParams(normalized_ndim=1)),
    ("ln", (4, 6, 32), OpParams(normalized_ndim=2)),
    ("in", (3, 4, 8, 8), OpParams()),
    ("in", (3, 4, 8, 8), OpParams(mode="train", running_stats=True)),
    ("gn", (2, 6, 8, 8), OpParams(groups=2)),
    ("gn", (2, 6, 8, 8), OpParams(groups=6)),
    ("rms", (4, 6, 32), OpParams(normalized_ndim=1)),
]
IDS = [f"{op}-{p.label()}" for op, _, p in CASES]


def _arrays(p):
    named = {
        "x": p.x,
        "dy": p.dy,
        "weight": p.weight,
        "bias": p.bias,
        "running_mean": p.running_mean,
        "running_var": p.running_var,
    }
    named.update({f"step{i}": s for i, s in enumerate(p.steps)})
    return {k: v for k, v in named.items() if v is not None}


def _groups(problem):
    """x viewed as (groups, values per group) for the op's normalization."""
    norm = OPS[problem.op].normalization(problem.shape, problem.params)
    v = problem.x.reshape(norm.view)
    keep = [a for a in range(v.ndim) if a not in norm.axes]
    v = np.transpose(v, keep + list(norm.axes))
    return v.reshape(int(np.prod([norm.view[a] for a in keep], dtype=np.int64)), norm.count)


@pytest.mark.parametrize(("op", "shape", "params"), CASES, ids=IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed(op, shape, params, kind):
    a = make_problem(op, shape, params, "float32", kind, EPS, seed=3)
    b = make_problem(op, shape, params, "float32", kind, EPS, seed=3)
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


@pytest.mark.parametrize(("op", "shape", "params"), CASES, ids=IDS)
def test_differs_across_seeds(op, shape, params):
    a = make_problem(op, shape, params, "float64", "normal", EPS, seed=0)
    b = make_problem(op, shape, params, "float64", "normal", EPS, seed=1)
    assert not np.array_equal(a.x, b.x)
    assert not np.array_equal(a.dy, b.dy)
    assert not np.array_equal(a.weight, b.weight)


def test_case_seed_is_stable_and_distinguishes_cases():
    s = case_seed(0, "gn", (2, 6, 4), OpParams(groups=2), "normal")
    assert s == case_seed(0, "gn", (2, 6, 4), OpParams(groups=2), "normal")
    assert 0 <= s < 2**64
    others = {
        case_seed(1, "gn", (2, 6, 4), OpParams(groups=2), "normal"),
        case_seed(0, "ln", (2, 6, 4), OpParams(groups=2), "normal"),
        case_seed(0, "gn", (2, 6, 5), OpParams(groups=2), "normal"),
        case_seed(0, "gn", (2, 6, 4), OpParams(groups=3), "normal"),
        case_seed(0, "gn", (2, 6, 4), OpParams(groups=2), "large_mean"),
    }
    assert s not in others and len(others) == 5


def test_data_do_not_depend_on_dtype_beyond_rounding():
    args = ("ln", (4, 16), OpParams(normalized_ndim=1))
    p64 = make_problem(*args, "float64", "normal", EPS, seed=2)
    for dtype in ("float32", "float16", "bfloat16"):
        p = make_problem(*args, dtype, "normal", EPS, seed=2)
        np.testing.assert_array_equal(p.x, quantize(p64.x, dtype))
        np.testing.assert_array_equal(p.dy, quantize(p64.dy, dtype))


@pytest.mark.parametrize(("op", "shape", "params"), CASES[:3] + CASES[6:7], ids=IDS[:3] + IDS[6:7])
def test_arrays_are_read_only(op, shape, params):
    p = make_problem(op, shape, params, "float32", "normal", EPS, seed=0)
    arrays = _arrays(p)
    assert {"x", "dy", "weight"} <= arrays.keys()
    for name, a in arrays.items():
        assert not a.flags.writeable, name
        with pytest.raises(ValueError):
            a[(0,) * a.ndim] = 1.0
        with pytest.raises(ValueError):
            a += 1.0


def _independently_representable(a, dtype):
    """Exact representability checked without normcheck.dtypes."""
    if dtype == "float64":
        return True
    if dtype == "float32":
        return np.array_equal(a.astype(np.float32).astype(np.float64), a)
    if dtype == "float16":
        return np.array_equal(a.astype(np.float16).astype(np.float64), a)
    f32 = a.astype(np.float32)
    return np.array_equal(f32.astype(np.float64), a) and not np.any(f32.view(np.uint32) & 0xFFFF)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("op", "shape", "params"), [CASES[i] for i in (0, 3, 6, 8)], ids=[IDS[i] for i in (0, 3, 6, 8)]
)
def test_values_exactly_representable(op, shape, params, kind, dtype):
    p = make_problem(op, shape, params, dtype, kind, EPS, seed=5)
    for name, a in _arrays(p).items():
        assert a.dtype == np.float64, name
        np.testing.assert_array_equal(quantize(a, dtype), a, err_msg=name)
        assert _independently_representable(a, dtype), name
        assert np.all(np.isfinite(a)), name


def test_low_precision_data_are_actually_rounded():
    """Representability is not vacuous: a float16 problem is not float64 data."""
    args = ("ln", (4, 32), OpParams(normalized_ndim=1))
    p64 = make_problem(*args, "float64", "normal", EPS, seed=1)
    p16 = make_problem(*args, "float16", "normal", EPS, seed=1)
    assert not np.array_equal(p64.x, p16.x)
    assert not _independently_representable(p64.x, "float16")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("op", "shape", "params"), CASES, ids=IDS)
def test_large_mean(op, shape, params, dtype):
    p = make_problem(op, shape, params, dtype, "large_mean", EPS, seed=0)
    for a in (p.x, *p.steps):
        assert abs(a.mean() - LARGE_MEAN) < 0.02 * LARGE_MEAN
        assert np.all(a > 0)
        assert a.std() > 0  # a spread, not a constant
        assert a.std() < 0.2 * LARGE_MEAN  # small relative to the mean
    g = _groups(p)
    assert np.all(g.std(axis=1) > 0)


def test_large_mean_spread_tracks_the_dtype():
    args = ("ln", (8, 64), OpParams(normalized_ndim=1))
    s64 = make_problem(*args, "float64", "large_mean", EPS).x.std()
    s32 = make_problem(*args, "float32", "large_mean", EPS).x.std()
    s16 = make_problem(*args, "float16", "large_mean", EPS).x.std()
    assert 0.005 < s64 < 0.02  # the 1e-2 floor
    assert 0.005 < s32 < 0.03  # 16 ulps of 8192 in float32 = 2^-6
    assert 50 < s16 < 250  # 16 ulps of 8192 in float16 = 128


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("op", "shape", "params"), CASES, ids=IDS)
def test_constant_first_group(op, shape, params, dtype):
    p = make_problem(op, shape, params, dtype, "constant", EPS, seed=0)
    norm = OPS[op].normalization(shape, params)
    for a in (p.x, *p.steps):
        v = a.reshape(norm.view)
        first = tuple(slice(None) if ax in norm.axes else 0 for ax in range(v.ndim))
        assert v[first].size == norm.count
        assert np.all(v[first] == CONSTANT_VALUE)
    g = _groups(p)
    assert np.all(g[0] == CONSTANT_VALUE)
    assert np.all(g[1:].std(axis=1) > 0)  # only the first group is constant


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
@pytest.mark.parametrize(("op", "shape", "params"), CASES, ids=IDS)
def test_tiny_scale(op, shape, params, eps):
    p = make_problem(op, shape, params, "float32", "tiny_scale", eps, seed=0)
    std = p.x.std()
    assert 0.7 * np.sqrt(eps) < std < 1.3 * np.sqrt(eps)
    assert abs(p.x.mean()) < 0.5 * np.sqrt(eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("op", "shape", "params"), CASES, ids=IDS)
def test_half_range(op, shape, params, dtype):
    p = make_problem(op, shape, params, dtype, "half_range", EPS, seed=0)
    for a in (p.x, *p.steps):
        assert np.abs(a).max() <= HALF_RANGE
        assert np.abs(a).max() > 0.8 * HALF_RANGE  # actually spans the range
        assert a.min() < 0 < a.max()
        assert np.all(np.abs(a) <= 65504.0)  # float16's largest


@pytest.mark.parametrize(("op", "shape", "params"), CASES, ids=IDS)
def test_weights_are_random(op, shape, params):
    p = make_problem(op, shape, params, "float32", "normal", EPS, seed=0)
    pshape = OPS[op].param_shape(shape, params)
    assert p.weight.shape == pshape
    assert not np.all(p.weight == 1.0)
    assert p.weight.std() > 0.1
    if op == "rms":
        assert p.bias is None
    else:
        assert p.bias.shape == pshape
        assert not np.all(p.bias == 0.0)
    assert p.dy.shape == shape and p.x.shape == shape


def test_no_affine_means_no_parameters():
    p = make_problem("gn", (2, 4, 3), OpParams(groups=2, affine=False), "float32", "normal", EPS)
    assert p.weight is None and p.bias is None


@pytest.mark.parametrize(("mode", "n_steps"), [("train", TRAINING_STEPS - 1), ("eval", TRAINING_STEPS)])
@pytest.mark.parametrize("op", ["bn", "in"])
def test_running_stats_problems_have_steps(op, mode, n_steps):
    assert (TRAINING_STEPS - 1, TRAINING_STEPS) == (2, 3)
    shape = (4, 3, 5)
    p = make_problem(op, shape, OpParams(mode=mode, running_stats=True), "float32", "normal", EPS, seed=0)
    assert len(p.steps) == n_steps
    for s in p.steps:
        assert s.shape == shape
        assert not np.array_equal(s, p.x)
    assert len({s.tobytes() for s in p.steps}) == n_steps  # distinct batches
    np.testing.assert_array_equal(p.running_mean, np.zeros(3))
    np.testing.assert_array_equal(p.running_var, np.ones(3))
    assert p.momentum == 0.1


@pytest.mark.parametrize(("op", "shape"), [("bn", (1, 3)), ("bn", (1, 2, 1, 1)), ("in", (2, 3, 1))])
@pytest.mark.parametrize("kind", KINDS)
def test_evaluation_on_a_shape_that_cannot_train_starts_from_seen_statistics(op, shape, kind):
    """Training on one value per channel raises in PyTorch, so such an evaluation case has no
    training steps; its running statistics are those of batches of its kind, in its dtype."""
    params = OpParams(mode="eval", running_stats=True)
    p = make_problem(op, shape, params, "float16", kind, EPS, seed=0)
    assert p.steps == ()
    assert p.running_mean is not None and p.running_var is not None
    assert p.running_mean.shape == p.running_var.shape == (shape[1],)
    np.testing.assert_array_equal(quantize(p.running_mean, "float16"), p.running_mean)
    np.testing.assert_array_equal(quantize(p.running_var, "float16"), p.running_var)
    assert np.all(p.running_var >= 0)
    if kind != "constant":  # a constant group may hold the only value of a channel
        assert np.all(p.running_var > 0)
    if kind == "large_mean":
        np.testing.assert_allclose(p.running_mean, LARGE_MEAN, rtol=0.05)  # fp16 spreads widely
    else:
        assert not np.array_equal(p.running_mean, np.zeros(shape[1]))


def test_evaluation_on_a_trainable_shape_keeps_its_steps_and_inputs():
    """The statistics seen come from draws after every other input: other cases are unchanged."""
    params = OpParams(mode="eval", running_stats=True)
    p = make_problem("bn", (2, 3), params, "float32", "normal", EPS, seed=4)
    assert len(p.steps) == TRAINING_STEPS
    np.testing.assert_array_equal(p.running_var, np.ones(3))
    untrainable = make_problem("bn", (1, 3), params, "float32", "normal", EPS, seed=4)
    assert untrainable.steps == ()


@pytest.mark.parametrize(
    ("op", "shape", "params"),
    [
        ("ln", (0, 8), OpParams(normalized_ndim=1)),
        ("gn", (2, 4, 0), OpParams(groups=2)),
        ("bn", (0, 3, 2), OpParams(mode="eval", running_stats=True)),
        ("in", (2, 0, 4), OpParams(mode="train", running_stats=True)),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_empty_shapes_make_empty_inputs(op, shape, params, kind):
    p = make_problem(op, shape, params, "float32", kind, EPS)
    assert p.x.shape == p.dy.shape == shape and p.x.size == 0
    assert all(s.shape == shape for s in p.steps)


def test_problems_without_running_stats_have_no_steps():
    p = make_problem("in", (2, 3, 4), OpParams(), "float32", "normal", EPS)
    assert p.steps == ()
    assert p.running_mean is None and p.running_var is None


def test_problem_records_its_identity():
    params = OpParams(groups=3)
    p = make_problem("gn", [2, 6, 4], params, "bfloat16", "tiny_scale", 1e-3, momentum=0.2, seed=9)
    assert (p.op, p.shape, p.params, p.dtype, p.kind, p.eps, p.momentum) == (
        "gn",
        (2, 6, 4),
        params,
        "bfloat16",
        "tiny_scale",
        1e-3,
        0.2,
    )


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown input kind"):
        make_problem("ln", (2, 4), OpParams(normalized_ndim=1), "float32", "bogus", EPS)
