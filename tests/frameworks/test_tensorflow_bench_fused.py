"""The TensorFlow bench on the fused residual add + norm (``add_rms``, ``add_ln``) and adaLN of
user code (raw TensorFlow functions and Keras layers): timed forward and backward in every mode
(eager, tf.function, tf.function+XLA), the forward returning both outputs of a fused op, the
backward the gradients verify checks (x, the residual, the weight and bias; x, scale and shift)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _require import require

tf = require("tensorflow")

from normcheck.bench.inputs import bench_problem
from normcheck.bench.plan import BenchRequest, prepare
from normcheck.bench.records import BACKWARD, FORWARD
from normcheck.bench.run import run
from normcheck.bench.timer import TimerSettings
from normcheck.frameworks import bench_module
from normcheck.problem import Problem

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FUNCTIONS, LAYERS = FIXTURES / "tf_functions.py", FIXTURES / "keras_fused_adaln.py"
QUICK = TimerSettings(min_time=0.005, max_time=0.03, warmup=0.0)
VARIANTS = ("eager", "tf.function", "tf.function+XLA")
SHAPES = {"add_rms": "8,32", "add_ln": "8,32", "adaln": "2,8,32"}
# id -> (op, implementation)
CASES = {
    "add_rms function": ("add_rms", f"{FUNCTIONS}:fused_add_rms_norm"),
    "add_rms keras": ("add_rms", f"{LAYERS}:FusedAddRMSNorm"),
    "add_ln function": ("add_ln", f"{FUNCTIONS}:fused_add_layer_norm"),
    "adaln function": ("adaln", f"{FUNCTIONS}:adaln"),
    "adaln keras": ("adaln", f"{LAYERS}:AdaLayerNorm"),
}
target = bench_module("tensorflow")


def _request(op: str, impl: object, **fields) -> BenchRequest:
    return BenchRequest(ops=op, frameworks="tensorflow", impl=impl, shapes=(SHAPES[op],), **fields)


def _case(op: str, impl: object, dtype: str = "float64"):
    """The user's implementation of ``op`` as the bench plans it, and the case's inputs."""
    plan = prepare(_request(op, impl, dtypes=dtype))
    user = next(s for s in plan.sources if s.name == "user")
    shape = plan.shapes[op][0]
    return user.impls[op][0], bench_problem(op, shape.shape, shape.params, dtype)


def _values(t) -> np.ndarray:
    return tf.cast(t, tf.float64).numpy()


def _verify_gradients(impl, p: Problem) -> list[np.ndarray]:
    """The gradients verify computes, in the bench's order: x, (the residual,) weight, bias."""
    out = impl.run(p, "contiguous", "cpu").values
    names = ["grad_input", "grad_residual", "grad_weight", "grad_bias"]
    return [out[n] for n in names if n in out]


# every mode for a function and a layer (the compiled modes wrap any callable alike, and
# test_backward_gives_the_gradients_verify_checks runs each case in each mode), eager for the others
TIMED = {"add_rms function": VARIANTS, "adaln keras": VARIANTS}


@pytest.mark.parametrize("name", list(CASES))
def test_timed_forward_and_backward_in_every_mode(name):
    op, impl = CASES[name]
    variants = TIMED.get(name, ("eager",))
    modes = "eager,compiled" if len(variants) > 1 else "eager"
    report = run(prepare(_request(op, impl, modes=modes)), QUICK, cpus=[0])
    rows = [r for r in report.results if r.case.framework == "user"]
    assert {(r.case.pass_, r.case.mode) for r in rows} == {(p, v) for p in (FORWARD, BACKWARD) for v in variants}
    for r in rows:
        assert r.status == "ok", (r.case.pass_, r.case.mode, r.reason)
        assert r.median > 0 and r.gbps and r.gbps > 0
        assert (r.compile_s is not None) == (r.case.mode != "eager")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(CASES))
def test_backward_gives_the_gradients_verify_checks(name, variant):
    op, impl_spec = CASES[name]
    impl, p = _case(op, impl_spec)
    expected = _verify_gradients(impl, p)
    fused = op != "adaln"
    assert len(expected) == (4 if op == "add_ln" else 3)  # x, residual, weight[, bias]; x, scale, shift
    t = target.build(impl, p, BACKWARD, variant, "cpu")
    assert t.mode == variant and t.compiled == (variant != "eager")
    assert (t.setup_compile_s > 0) == (variant != "eager")
    for _ in range(2):  # every call differentiates the one recorded forward
        got = t.call()
        t.sync(got)
        assert [tuple(g.shape) for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(_values(g), e, rtol=1e-9, atol=1e-12)
    if fused:
        assert expected[0].shape == p.shape and expected[1].shape == p.shape


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["add_ln function", "add_rms keras", "adaln function"])
def test_forward_returns_what_verify_checks(name, variant):
    op, impl_spec = CASES[name]
    impl, p = _case(op, impl_spec)
    out = impl.run(p, "contiguous", "cpu").values
    t = target.build(impl, p, FORWARD, variant, "cpu")
    got = t.call()
    t.sync(got)
    if op == "adaln":
        np.testing.assert_allclose(_values(got), out["forward"], rtol=1e-9, atol=1e-12)
        return
    y, h = got  # the normalized output and the updated residual
    np.testing.assert_allclose(_values(y), out["forward"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_values(h), out["residual_out"], rtol=0, atol=0)


def _one_output(x, residual, weight, eps):
    """Not a fused add + norm: returns the normalized output alone."""
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x + residual), axis=-1, keepdims=True) + eps) * weight


def test_a_fused_call_returning_one_tensor_is_an_error_row():
    report = run(prepare(_request("add_rms", _one_output, modes="eager,compiled")), QUICK, cpus=[0])
    rows = [r for r in report.results if r.case.framework == "user"]
    assert {(r.case.pass_, r.case.mode) for r in rows} == {(p, v) for p in (FORWARD, BACKWARD) for v in VARIANTS}
    for r in rows:  # the message of its own, not tf.function's "in user code:"
        assert r.status == "error" and "returns (output, residual_out), two tensors" in r.reason
