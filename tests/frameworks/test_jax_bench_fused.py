"""bench of the JAX user forms no JAX layer has built in: a fused residual add + norm (add_rms,
add_ln) and adaLN, as JAX functions and flax.linen modules, forward and backward, eager and under
jax.jit; and a JAX function with FP8-quantized output, forward only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _require import require

jax = require("jax")
require("jax", "flax")

from fixtures import flax_modules as fm
from fixtures import jax_functions as jf
from normcheck.bench.inputs import bench_problem
from normcheck.bench.plan import BenchRequest, prepare
from normcheck.bench.records import BACKWARD, FORWARD
from normcheck.bench.run import run
from normcheck.bench.timer import TimerSettings
from normcheck.frameworks import bench_module
from normcheck.frameworks.jax import forms
from normcheck.ops import OpParams

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FUNCTIONS, MODULES = FIXTURES / "jax_functions.py", FIXTURES / "flax_modules.py"
QUICK = TimerSettings(min_time=0.005, max_time=0.03, warmup=0.0)
MODES = {("eager", FORWARD), ("jax.jit", FORWARD), ("eager", BACKWARD), ("jax.jit", BACKWARD)}
target = bench_module("jax")

# (op, file, name, shape)
TIMED = [
    ("add_rms", FUNCTIONS, "fused_add_rms_norm", "8,32"),
    ("add_ln", FUNCTIONS, "fused_add_layer_norm", "8,32"),
    ("add_rms", MODULES, "FusedAddRMSNorm", "2,3,16"),
    ("add_ln", MODULES, "FusedAddLayerNorm", "8,32"),
    ("adaln", FUNCTIONS, "adaln", "2,4,32"),
    ("adaln", MODULES, "AdaLayerNorm", "2,4,32"),
]


def _run(**fields):
    return run(prepare(BenchRequest(frameworks="jax", modes="eager,compiled", **fields)), QUICK, cpus=[0])


@pytest.mark.parametrize(("op", "path", "name", "shape"), TIMED, ids=[t[2] for t in TIMED])
def test_fused_and_adaln_are_timed_forward_and_backward_eager_and_jitted(op, path, name, shape):
    dtypes = ("float32", "bfloat16") if name == "fused_add_rms_norm" else ("float32",)  # one half run is enough
    report = _run(ops=op, impl=f"{path}:{name}", shapes=(shape,), dtypes=",".join(dtypes))
    rows = {(r.case.dtype, r.case.mode, r.case.pass_): r for r in report.results if r.case.framework == "user"}
    assert set(rows) == {(dtype, *m) for dtype in dtypes for m in MODES}
    for key, r in rows.items():
        assert r.status == "ok", (key, r.reason)
        assert r.median > 0 and r.gbps and r.gbps > 0


def test_an_fp8_output_is_timed_forward_and_its_backward_is_a_skip():
    for scale in ("row", "static"):
        name = "rms_norm_fp8_static" if scale == "static" else "rms_norm_fp8"
        report = _run(ops="rms", quantize="e4m3", scale=scale, impl=f"{FUNCTIONS}:{name}", shapes=("8,32",))
        rows = {(r.case.mode, r.case.pass_): r for r in report.results}
        assert {r.case.framework for r in report.results} == {"user"}  # Flax has no FP8 output built in
        assert set(rows) == MODES
        for (_, pass_), r in rows.items():
            assert f"fp8 e4m3 {scale}" in r.case.params
            if pass_ == FORWARD:
                assert r.status == "ok" and r.median > 0, r.reason
            else:
                assert r.status == "skip" and r.reason.startswith("an FP8-quantized output has no gradient")


def _close(got, want) -> None:
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["eager", "jax.jit"])
def test_the_timed_calls_compute_what_verify_checks(variant):
    """forward: (output, residual_out) / (y,); backward: the gradients of x, the residual and the
    params / of x, shift and scale, as verify's case functions compute them."""
    impl = forms.build("jax_function", "add_rms", jf.fused_add_rms_norm, "fused_add_rms_norm", omit_defaults=False)
    p = bench_problem("add_rms", (8, 32), OpParams(normalized_ndim=1), "float32")
    residual, dresidual = p.fused_inputs()
    params = {"scale": jax.numpy.asarray(p.weight, "float32")}
    x, r, dy, dr = (jax.numpy.asarray(a, "float32") for a in (p.x, residual, p.dy, dresidual))
    outs, dx, dres, dparams = forms._fused_function_case(impl.fused_call(p))(params, x, r, dy, dr)
    _close(target.build(impl, p, FORWARD, variant, "cpu").call(), outs)
    _close(target.build(impl, p, BACKWARD, variant, "cpu").call(), (dx, dres, dparams))

    module = forms.build("flax_module", "adaln", fm.AdaLayerNorm, "AdaLayerNorm", omit_defaults=False)
    q = bench_problem("adaln", (2, 4, 32), OpParams(), "float32")
    case, host = forms._modulation_module_case(module.call(q))
    x, shift, scale, dy = (jax.numpy.asarray(a, "float32") for a in (q.x, q.bias, q.weight, q.dy))
    y, dx, dshift, dscale = case(x, shift, scale, dy, host)
    _close(target.build(module, q, FORWARD, variant, "cpu").call(), (y,))
    _close(target.build(module, q, BACKWARD, variant, "cpu").call(), (dx, dshift, dscale))
