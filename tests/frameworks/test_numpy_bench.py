"""The NumPy bench target: the reference formulas in the case's dtype, and the user's CS231n pair."""

from __future__ import annotations

import numpy as np
import pytest
from _bench_cases import OP_CASES

from fixtures import cs231n_layers as layers
from normcheck.bench.inputs import bench_problem
from normcheck.bench.records import BACKWARD, FORWARD
from normcheck.bench.timer import TimerSettings, measure_host
from normcheck.frameworks import bench_module
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.numpy.forms import build as build_cs231n
from normcheck.names import OP_NAMES
from normcheck.ops import OpParams
from normcheck.ops._generic import Grads
from normcheck.reference import reference

target = bench_module("numpy")

CASES = OP_CASES
DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
TOLERANCE = {"float64": 1e-12, "float32": 1e-4, "float16": 3e-2}


def build(impl, case, dtype="float32", pass_=FORWARD, device="cpu", shape=None, params=None):
    op, default_shape, default_params = CASES.get(case, (case, None, None))
    problem = bench_problem(op, shape or default_shape, params or default_params, dtype)
    return problem, target.build(impl, problem, pass_, "eager", device)


def reference_impl(case: str):
    return target.implementations(CASES[case][0])[0]


def test_module_interface():
    assert target.MODES == {"eager": ("eager",), "compiled": ("eager",)}
    assert target.set_threads(8) == 1
    impl = reference_impl("ln")
    assert (impl.framework, impl.name, impl.op) == ("numpy", "numpy reference", "ln")
    assert impl.framework == "numpy"
    assert target.layout(impl, (2, 3)) == "contiguous"


def test_classify():
    assert target.classify(MemoryError()) == "oom"
    assert target.classify(RuntimeError("x")) is None


# -- the reference formulas ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", list(CASES))
def test_reference_forward_runs_in_the_dtype(case, dtype):
    problem, t = build(reference_impl(case), case, dtype)
    assert not t.compiled and t.mode == "eager" and t.memory is None
    y, _ = t.call()
    t.sync(y)
    assert y.dtype == DTYPES[dtype] and y.shape == problem.shape
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(y.astype(np.float64), reference(problem)["forward"], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", list(CASES))
def test_reference_backward_runs_in_the_dtype(case, dtype):
    problem, t = build(reference_impl(case), case, dtype, BACKWARD)
    grads = t.call()
    assert isinstance(grads, Grads)
    assert grads.dx.dtype == DTYPES[dtype] and grads.dx.shape == problem.shape
    assert grads.dweight.dtype == DTYPES[dtype]
    expected = reference(problem)
    tol = 10 * TOLERANCE[dtype]  # gradients sum more terms
    np.testing.assert_allclose(grads.dx.astype(np.float64), expected["grad_input"], rtol=tol, atol=tol)
    np.testing.assert_allclose(grads.dweight.astype(np.float64), expected["grad_weight"], rtol=tol, atol=tol)
    again = t.call()  # the cache is reused unchanged
    np.testing.assert_array_equal(again.dx, grads.dx)


def test_batch_norm_in_training_updates_the_running_statistics_every_call():
    problem, t = build(reference_impl("bn train"), "bn train", "float64")
    running = t.keep[-1]
    t.call()
    expected = reference(problem)
    np.testing.assert_allclose(running[0][0], expected["running_mean"], rtol=1e-12)
    np.testing.assert_allclose(running[0][1], expected["running_var"], rtol=1e-12)
    t.call()
    assert not np.allclose(running[0][0], expected["running_mean"])  # as a layer's buffers, they move on


def test_bfloat16_and_other_devices_are_unsupported():
    with pytest.raises(Unsupported, match=r"^NumPy has no bfloat16$"):
        build(reference_impl("gn"), "gn", "bfloat16")
    with pytest.raises(Unsupported, match=r"^NumPy runs on the CPU only$"):
        build(reference_impl("gn"), "gn", device="cuda")


def test_the_timer_runs_it():
    _, t = build(reference_impl("gn"), "gn", pass_=BACKWARD)
    m = measure_host(t, TimerSettings(min_time=0.005, max_time=0.02, warmup=0.002))
    assert m.samples and all(s > 0 for s in m.samples)


def test_every_op_has_a_case():
    assert {c[0] for c in CASES.values()} == set(OP_NAMES)  # bench times the five ops, not the fused ones


# -- the CS231n pair ---------------------------------------------------------------------------

PAIRS = {
    "batchnorm": ("bn", layers.batchnorm_forward, layers.batchnorm_backward, (8, 5)),
    "spatial_batchnorm": ("bn", layers.spatial_batchnorm_forward, layers.spatial_batchnorm_backward, (2, 3, 4, 5)),
    "layernorm": ("ln", layers.layernorm_forward, layers.layernorm_backward, (4, 16)),
    "spatial_groupnorm": ("gn", layers.spatial_groupnorm_forward, layers.spatial_groupnorm_backward, (2, 6, 4, 4)),
}
PAIR_PARAMS = {
    "bn": OpParams(mode="train", running_stats=True),
    "ln": OpParams(normalized_ndim=1),
    "gn": OpParams(groups=3),
}


def cs231n(pair: str, omit_defaults: bool = False, backward: bool = True):
    op, forward, backward_fn, shape = PAIRS[pair]
    impl = build_cs231n("cs231n", op, forward, forward.__name__, omit_defaults, backward_fn if backward else None)
    return impl, op, shape


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_cs231n_forward_and_backward(pair, dtype):
    impl, op, shape = cs231n(pair)
    assert impl.framework == "numpy"
    problem, t = build(impl, op, dtype, shape=shape, params=PAIR_PARAMS[op])
    out, _ = t.call()
    assert out.dtype == DTYPES[dtype] and out.shape == shape and np.isfinite(out).all()
    tol = TOLERANCE[dtype] if dtype != "float64" else 1e-10
    np.testing.assert_allclose(out.astype(np.float64), reference(problem)["forward"], rtol=tol, atol=tol)
    _, tb = build(impl, op, dtype, BACKWARD, shape=shape, params=PAIR_PARAMS[op])
    dx, dgamma, dbeta = tb.call()
    assert dx.dtype == DTYPES[dtype] and dx.shape == shape and np.isfinite(dx).all()
    assert dgamma.size == dbeta.size == shape[1]  # C, or D of (N, D)


def test_cs231n_batch_norm_keeps_its_running_statistics_in_bn_param():
    impl, op, shape = cs231n("batchnorm")
    problem, t = build(impl, op, "float64", shape=shape, params=PAIR_PARAMS[op])
    param = t.keep[-1]
    assert param["mode"] == "train" and "eps" in param and "momentum" in param
    t.call()
    np.testing.assert_allclose(param["running_mean"], reference(problem)["running_mean"], rtol=1e-10)


def test_cs231n_eval_runs_in_test_mode_and_has_no_backward():
    impl, op, shape = cs231n("batchnorm")
    params = OpParams(mode="eval", running_stats=True)
    _, t = build(impl, op, "float32", shape=shape, params=params)
    assert t.keep[-1]["mode"] == "test"
    out, _ = t.call()
    assert out.shape == shape
    with pytest.raises(Unsupported, match="training mode only"):
        build(impl, op, "float32", BACKWARD, shape=shape, params=params)


def test_cs231n_without_a_backward_times_the_forward_only():
    impl, op, shape = cs231n("layernorm", backward=False)
    build(impl, op, shape=shape, params=PAIR_PARAMS[op])[1].call()
    with pytest.raises(Unsupported, match=r"^no backward function was given$"):
        build(impl, op, pass_=BACKWARD, shape=shape, params=PAIR_PARAMS[op])


def test_cs231n_defaults_style_leaves_out_eps():
    impl, op, shape = cs231n("spatial_groupnorm", omit_defaults=True)
    _, t = build(impl, op, shape=shape, params=PAIR_PARAMS[op])
    assert t.keep[-1] == {}
    assert t.call()[0].shape == shape


def test_cs231n_shape_it_cannot_take_is_unsupported_with_the_reason():
    impl, op, _ = cs231n("batchnorm")
    with pytest.raises(Unsupported, match="takes \\(N, D\\) input in the CS231n convention"):
        build(impl, op, shape=(2, 3, 4, 5), params=PAIR_PARAMS[op])


def test_cs231n_bfloat16_and_cuda_are_unsupported():
    impl, op, shape = cs231n("layernorm")
    with pytest.raises(Unsupported, match=r"^NumPy has no bfloat16$"):
        build(impl, op, "bfloat16", shape=shape, params=PAIR_PARAMS[op])
    with pytest.raises(Unsupported, match=r"^NumPy runs on the CPU only$"):
        build(impl, op, device="cuda:0", shape=shape, params=PAIR_PARAMS[op])
