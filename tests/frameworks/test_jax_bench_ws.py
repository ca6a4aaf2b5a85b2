"""bench of JAX Weight Standardization (ws, ws_gn), a JAX function and a Flax ``nn.Conv``
subclass, forward and backward, eager and under jax.jit; and a Flax module's FP8-quantized
output, forward only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _require import require

jax = require("jax")
require("jax", "flax")

from fixtures import flax_ws
from normcheck.bench.inputs import bench_problem
from normcheck.bench.plan import BenchRequest, prepare
from normcheck.bench.records import BACKWARD, FORWARD
from normcheck.bench.run import run
from normcheck.bench.timer import TimerSettings
from normcheck.frameworks import bench_module
from normcheck.frameworks.jax import forms
from normcheck.ops import OpParams

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
QUICK = TimerSettings(min_time=0.005, max_time=0.03, warmup=0.0)
MODES = {("eager", FORWARD), ("jax.jit", FORWARD), ("eager", BACKWARD), ("jax.jit", BACKWARD)}
target = bench_module("jax")

# (op, impl)
TIMED = [
    ("ws", f"{FIXTURES / 'jax_functions.py'}:ws_conv"),
    ("ws_gn", f"{FIXTURES / 'flax_ws.py'}:StandardizedConv"),
]


def _run(**fields):
    return run(prepare(BenchRequest(frameworks="jax", modes="eager,compiled", **fields)), QUICK, cpus=[0])


@pytest.mark.parametrize(("op", "impl"), TIMED, ids=[t[0] for t in TIMED])
def test_ws_is_timed_forward_and_backward_eager_and_jitted(op, impl):
    report = _run(ops=op, impl=impl, shapes=("2,4,6,6",), dtypes="float32")
    rows = {(r.case.mode, r.case.pass_): r for r in report.results if r.case.framework == "user"}
    assert set(rows) == MODES
    for key, r in rows.items():
        assert r.status == "ok", (key, r.reason)
        assert r.median > 0 and r.gbps and r.gbps > 0
        assert r.case.layout == ("channels_last" if "flax_ws" in impl else "contiguous")


def test_a_flax_fp8_output_is_timed_forward_and_its_backward_is_a_skip():
    report = _run(
        ops="rms", quantize="e4m3", scale="row", impl=f"{FIXTURES / 'flax_fp8.py'}:RMSNormFP8", shapes=("8,32",)
    )
    rows = {(r.case.mode, r.case.pass_): r for r in report.results}
    assert set(rows) == MODES
    for (_, pass_), r in rows.items():
        if pass_ == FORWARD:
            assert r.status == "ok" and r.median > 0, r.reason
        else:
            assert r.status == "skip" and r.reason.startswith("an FP8-quantized output has no gradient")


def _close(got, want) -> None:
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["eager", "jax.jit"])
def test_the_timed_calls_compute_what_verify_checks(variant):
    """forward: (y,); backward: the gradients of x and of the leaves (kernel, bias, the group
    norm's affine), as verify's case function computes them."""
    impl = forms.build("flax_module", "ws_gn", flax_ws.StandardizedConv, "StandardizedConv", omit_defaults=False)
    p = bench_problem("ws_gn", (2, 4, 6, 6), OpParams(conv=(4, 3, 1), groups=2), "float32")
    x, leaves, dy = forms.ws_inputs(p, jax.devices("cpu")[0], "channels_last")
    y, dx, dleaves = forms._ws_module_case(impl.call(p))(x, leaves, dy)
    _close(target.build(impl, p, FORWARD, variant, "cpu").call(), (y,))
    _close(target.build(impl, p, BACKWARD, variant, "cpu").call(), (dx, dleaves))
