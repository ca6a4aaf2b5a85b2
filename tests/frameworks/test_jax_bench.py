"""The JAX bench target: the Flax modules and the user's JAX functions and Flax modules, forward
and backward, eager and under jax.jit, timed on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from _bench_cases import GRAD_CASES
from _require import require

jax = require("jax")
require("jax", "flax")

import jax.numpy as jnp

from fixtures import flax_modules as fm
from fixtures import jax_functions as jf
from normcheck import frameworks
from normcheck.bench.inputs import bench_problem
from normcheck.bench.records import BACKWARD, FORWARD, PASSES
from normcheck.bench.threads import available_cpus
from normcheck.bench.timer import TimerSettings, measure_host
from normcheck.frameworks import bench_module
from normcheck.frameworks.base import Implementation, Unsupported
from normcheck.frameworks.jax import forms as user_jax
from normcheck.ops import OpParams

target = bench_module("jax")
VARIANTS = ("eager", "jax.jit")
TINY = TimerSettings(min_time=0.002, max_time=0.02, warmup=0.001)
CASES = GRAD_CASES
USER = {
    "function": ("jax_function", {"gn": jf.group_norm, "bn": jf.batch_norm, "rms": jf.rms_norm}),
    "module": ("flax_module", {"gn": fm.GroupNorm, "bn": fm.BatchNorm, "rms": fm.RMSNorm}),
}
# computed from x alone: a backward that ran the forward again would contain them
FORWARD_ONLY = {"rsqrt", "sqrt", "square"}


def flax_impl(op: str) -> Implementation:
    return frameworks.load("jax").implementations(op)[0]


def user_impl(kind: str, op: str) -> Implementation:
    form, objs = USER[kind]
    return user_jax.build(form, op, objs[op], objs[op].__name__, omit_defaults=False)


def problem(op: str, dtype: str = "float32", params: OpParams | None = None):
    shape, default = CASES[op]
    return bench_problem(op, shape, params or default, dtype)


def layout_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if layout == "channels_last" else shape


def check_result(impl, p, pass_: str, out) -> None:
    """forward: (y, batch_stats); backward: (dx, the params' gradients); arrays in the target's layout."""
    shape = layout_shape(p.shape, target.layout(impl, p.shape))
    first, rest = out
    assert tuple(first.shape) == shape and np.isfinite(np.asarray(first, np.float64)).all()
    if pass_ == FORWARD:
        assert set(rest) == ({"mean", "var"} if p.params.running_stats else set())
    else:
        assert set(rest) == ({"scale"} if p.op == "rms" else {"scale", "bias"})
        assert all(np.isfinite(np.asarray(g, np.float64)).all() for g in rest.values())


def timed(impl, p, pass_: str, variant: str):
    t = target.build(impl, p, pass_, variant, "cpu")
    m = measure_host(t, TINY)
    assert m.samples and all(np.isfinite(s) and s > 0 for s in m.samples)
    return t


def primitives(jaxpr) -> set[str]:
    """The primitives of ``jaxpr`` and of every jaxpr nested in it (jit calls)."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                names |= primitives(inner)
    return names


def test_modes_and_native_layouts():
    assert target.MODES == {"eager": ("eager",), "compiled": ("jax.jit",)}
    assert target.layout(flax_impl("gn"), (2, 4, 3, 3)) == "channels_last"
    assert target.layout(flax_impl("bn"), (2, 4, 3, 3)) == "channels_last"
    assert target.layout(flax_impl("ln"), (2, 3, 8)) == "contiguous"
    assert target.layout(flax_impl("bn"), (2, 4)) == "contiguous"
    assert target.layout(user_impl("function", "gn"), (2, 4, 3, 3)) == "contiguous"
    assert target.layout(user_impl("module", "gn"), (2, 4, 3, 3)) == "channels_last"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("op", sorted(CASES))
def test_flax_modules_time_each_pass_and_variant(op, pass_, variant):
    impl, p = flax_impl(op), problem(op)
    t = timed(impl, p, pass_, variant)
    assert t.mode == variant and t.compiled == (variant == "jax.jit") and t.memory is None
    assert t.layout == target.layout(impl, p.shape)
    assert (t.setup_compile_s > 0) == (variant == "jax.jit")  # the trace, or the forward of a backward
    out = t.call()
    t.sync(out)
    check_result(impl, p, pass_, out)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", sorted(USER))
@pytest.mark.parametrize("op", ["gn", "bn", "rms"])
def test_user_implementations_time_each_pass(op, kind, variant):
    impl, p = user_impl(kind, op), problem(op)
    for pass_ in PASSES:
        t = timed(impl, p, pass_, variant)
        check_result(impl, p, pass_, t.call())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "impl",
    [flax_impl("bn"), user_impl("function", "bn"), user_impl("module", "bn")],
    ids=["flax", "function", "module"],
)
def test_batch_norm_forward_returns_updated_statistics(impl, variant):
    p = problem("bn")
    _, stats = target.build(impl, p, FORWARD, variant, "cpu").call()
    batch = p.x.mean(axis=(0, 2))
    assert np.allclose(np.asarray(stats["mean"]), p.momentum * batch, atol=1e-6)  # from zeros, as configured
    evaluation = problem("bn", params=OpParams(mode="eval", running_stats=True))
    _, stats = target.build(impl, evaluation, FORWARD, variant, "cpu").call()
    assert np.array_equal(np.asarray(stats["mean"]), evaluation.running_mean)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "impl",
    [flax_impl("gn"), flax_impl("ln"), flax_impl("rms"), user_impl("function", "gn")],
    ids=["gn", "ln", "rms", "user-gn"],
)
def test_backward_call_does_not_run_the_forward_again(impl, variant):
    p = problem(impl.op)
    forward = primitives(jax.make_jaxpr(target.build(impl, p, FORWARD, variant, "cpu").call)().jaxpr)
    backward = primitives(jax.make_jaxpr(target.build(impl, p, BACKWARD, variant, "cpu").call)().jaxpr)
    assert forward & FORWARD_ONLY
    assert not backward & FORWARD_ONLY and "mul" in backward


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pass_", PASSES)
def test_float64_calls_enable_x64_themselves(pass_, variant):
    impl, p = flax_impl("gn"), problem("gn", "float64")
    t = timed(impl, p, pass_, variant)
    assert not jax.config.jax_enable_x64  # left as it was
    out = t.call()
    assert out[0].dtype == jnp.float64
    check_result(impl, p, pass_, out)


def test_untraceable_user_code_is_a_skip_under_jit_and_timed_eagerly():
    impl = user_jax.build("jax_function", "ln", jf.layer_norm_checked, "layer_norm_checked", omit_defaults=False)
    p = problem("ln")
    for pass_ in PASSES:
        with pytest.raises(Unsupported, match=r"cannot be traced by jax\.jit"):
            target.build(impl, p, pass_, "jax.jit", "cpu")
        check_result(impl, p, pass_, timed(impl, p, pass_, "eager").call())


def test_cases_it_cannot_time_are_unsupported():
    class Other(Implementation):
        framework, op, name = "numpy", "gn", "other"

        def run(self, problem, layout, device):
            raise AssertionError

    with pytest.raises(Unsupported, match="not a JAX implementation"):
        target.build(Other(), problem("gn"), FORWARD, "eager", "cpu")
    tracked = bench_problem("in", (2, 3, 4), OpParams(running_stats=True), "float32")
    with pytest.raises(Unsupported, match="no running statistics"):
        target.build(flax_impl("in"), tracked, FORWARD, "eager", "cpu")


def test_classify():
    runtime = jax.errors.JaxRuntimeError
    assert target.classify(runtime("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8 bytes.")) == "oom"
    assert target.classify(MemoryError()) == "oom"
    assert target.classify(runtime("UNIMPLEMENTED: no bf16 reduce on this backend")) == "skip"
    assert target.classify(runtime("INTERNAL: something else")) is None
    assert target.classify(ValueError("UNIMPLEMENTED")) is None


def test_set_threads_reports_what_xla_uses(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    assert target.set_threads(1) == 1
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    assert target.set_threads(1) == len(available_cpus())
    monkeypatch.delenv("XLA_FLAGS")
    assert target.set_threads(2) == len(available_cpus())
