"""TensorFlow: the Keras 3 layers, the raw ``tf.nn.moments`` + ``tf.nn.batch_normalization`` ops and
the user's Keras layers, eager or under ``tf.function`` (without and with XLA, ``jit_compile=True``).

Backward: a persistent ``tf.GradientTape`` records the forward once while building, and each call
is ``tape.gradient`` from the saved forward. Under ``tf.function`` the forward recorded by that
eager tape is one call of the traced function; for it TensorFlow derives a forward that also
returns the intermediates the gradient needs and a separate backward function (a graph of its own,
carrying the forward's attributes, so XLA compiles it too with jit_compile). ``tape.gradient`` then
runs that backward function alone on the saved intermediates: the forward is not re-run (batch
norm's moving statistics stay unchanged across backward calls). This is how a tf.function layer
is differentiated in an eager training loop; a training step traced whole (forward and backward in
one tf.function) is not separable and is not what is timed.

A fused add + norm (``Bound.fused``) is called on x and the residual and returns the normalized
output and the updated residual; its backward gives the gradients of x, the residual and the
weight (and bias) for the upstream gradients of both outputs (dy, dresidual), as verify's
``run_fused``. adaLN is the plain call on x, its gradients those of x, scale and shift (the
Bound's weight and bias).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from normcheck.bench.records import FORWARD
from normcheck.bench.target import MemoryProbe, Target
from normcheck.frameworks.base import Implementation, Unsupported

# tf as the adapter imported it, after selecting Keras's TensorFlow backend
from normcheck.frameworks.tensorflow.adapter import (
    CHANNELS_LAST,
    CONTIGUOUS,
    NO_KERNEL,
    Bound,
    TensorFlowImplementation,
    framework,
    fused_outputs,
    tensor,
    tf,
    tf_device,
)
from normcheck.names import Layout
from normcheck.problem import Problem

MODES = {"eager": ("eager",), "compiled": ("tf.function", "tf.function+XLA")}
# Every compiled case traces its own tf.function, on purpose (its compile time is its own);
# TensorFlow's warning about frequent retracing would only add noise to stderr.
QUIET = "ERROR"
OOM, SKIP = "oom", "skip"
XLA = "tf.function+XLA"
# a kernel missing for the dtype: eager placement, a graph's executor, XLA's compiler for its JIT devices
MISSING_KERNEL = (*NO_KERNEL, "No OpKernel was registered", "No registered", "Detected unsupported operations")


def implementations(op: str) -> list[Implementation]:
    """The adapter's implementations of ``op``."""
    return framework().implementations(op)


def device_problem(device: str) -> str | None:
    return framework().device_problem(device)


def set_threads(n: int) -> int | None:
    for setter in (
        tf.config.threading.set_intra_op_parallelism_threads,
        tf.config.threading.set_inter_op_parallelism_threads,
    ):
        with contextlib.suppress(RuntimeError):  # the runtime is initialised: its thread pools are fixed
            setter(n)
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if threads:
        return threads
    env = os.environ.get("TF_NUM_INTRAOP_THREADS", "")  # what TensorFlow's default 0 takes first
    return int(env) if env.strip().isdigit() and int(env) > 0 else None


def layout(impl: Implementation, shape: tuple[int, ...]) -> Layout:
    """Keras's native layout: channels last wherever the implementation offers it."""
    return CHANNELS_LAST if CHANNELS_LAST in impl.layouts(shape) else CONTIGUOUS


def classify(e: BaseException) -> str | None:
    """OOM for an out-of-memory error, SKIP for a missing kernel, None for anything else."""
    if isinstance(e, tf.errors.ResourceExhaustedError):
        return OOM
    if isinstance(e, TypeError):  # an op without the dtype, found while tracing a tf.function
        return SKIP if "not in list of allowed values" in str(e) else None
    if not isinstance(e, tf.errors.OpError):
        return None
    text = str(e)
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():  # XLA's allocator inside other errors
        return OOM
    return SKIP if any(m in text for m in MISSING_KERNEL) else None


def build(impl: Implementation, problem: Problem, pass_: str, variant: str, device: str) -> Target:
    if not isinstance(impl, TensorFlowImplementation):
        raise Unsupported(f"{impl.name} is not a TensorFlow implementation")
    if variant not in MODES["eager"] + MODES["compiled"]:
        raise ValueError(f"unknown TensorFlow mode {variant!r}")
    if problem.params.quant is not None and pass_ != FORWARD:
        raise Unsupported("an FP8-quantized output has no gradient: its forward is timed")
    lay = layout(impl, problem.shape)
    reason = impl.unsupported(problem, lay)
    if reason:
        raise Unsupported(reason)
    try:
        with tf.device(tf_device(device)):
            return _build(impl, problem, pass_, variant, device, lay)
    except (tf.errors.OpError, TypeError) as e:
        if classify(e) == SKIP:
            raise Unsupported(_reason(e)) from e
        raise


def _reason(e: BaseException) -> str:
    """The line of a missing-kernel error that says which op and dtype."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    markers = (*MISSING_KERNEL, "not in list of allowed values")
    return next((line for line in lines if any(m in line for m in markers)), lines[0] if lines else type(e).__name__)


def _build(impl: TensorFlowImplementation, problem: Problem, pass_: str, variant: str, device: str, lay: str) -> Target:
    place = tf_device(device)
    bound = impl.bind(problem, lay, device)
    fn = _callable(bound, problem)
    if variant != "eager":
        tf.get_logger().setLevel(QUIET)  # set here: importing Keras or absl may reset it
        fn = tf.function(fn, jit_compile=variant == XLA)
    inputs = [on_device(problem.x, problem.dtype, lay)]
    if bound.fused is not None:  # the residual beside x; the output and the updated residual out
        inputs.append(on_device(problem.fused_inputs()[0], problem.dtype, lay))
    cuda = device.startswith("cuda")
    common: dict[str, Any] = {
        "mode": variant,
        "compiled": variant != "eager",
        "layout": lay,
        "sync": device_sync(cuda),
        "memory": memory_probe(place) if cuda else None,
    }
    if pass_ == FORWARD:

        def call() -> Any:
            with tf.device(place):
                out = fn(*inputs)
            return out if bound.fused is None else fused_outputs(out)

        return Target(call, keep=[*inputs, bound, fn], **common)

    sources = [*inputs, *variables(bound)]
    upstream = [problem.dy] + ([problem.fused_inputs()[1]] if bound.fused is not None else [])
    grads = [on_device(g, problem.dtype, lay) for g in upstream]
    start = time.perf_counter()
    with tf.GradientTape(persistent=True) as tape:
        for t in inputs:
            tape.watch(t)
        out = fn(*inputs)  # the forward every timed backward differentiates (a traced call under tf.function)
    if cuda:
        tf.test.experimental.sync_devices()
    setup = time.perf_counter() - start
    # a fused op's (output, residual_out) checked here, outside a traced function, where a wrong
    # result keeps its own message (one raised while tracing opens with "in user code:")
    ys = [out] if bound.fused is None else list(fused_outputs(out))

    def backward() -> list[tf.Tensor]:
        with tf.device(place):
            return tape.gradient(ys, sources, output_gradients=grads)

    keep = [*inputs, *ys, *grads, tape, bound, fn]
    return Target(backward, keep=keep, setup_compile_s=setup if variant != "eager" else 0.0, **common)


def _callable(bound: Bound, problem: Problem) -> Callable[..., Any]:
    """The case's call on its inputs: x alone, or x and the residual (a fused add + norm, returning
    the normalized output and the updated residual), or x to (q, scale) (an FP8-quantized output,
    its raw result: the conversion verify makes is not timed)."""
    if bound.fused is not None:
        return bound.fused
    if bound.quantized_call is not None:
        return bound.quantized_call
    training = problem.params.mode == "train" or not problem.params.running_stats

    def forward(x: tf.Tensor) -> tf.Tensor:
        return bound.forward(x, training)

    return forward


def variables(bound: Bound) -> list[Any]:
    return [v for v in (bound.weight, bound.bias) if v is not None]


def on_device(a: Any, dtype: str, lay: str) -> tf.Tensor:
    """The array in ``dtype``, produced by an op run in the current device scope, so it lies on that device."""
    return tf.identity(tensor(a, dtype, lay))


def device_sync(cuda: bool) -> Callable[[Any], None]:
    """Wait for the device; eager TensorFlow on the CPU returns finished results unless made asynchronous."""
    if cuda or not tf.config.experimental.get_synchronous_execution():
        return lambda out: tf.test.experimental.sync_devices()
    return lambda out: None


def memory_probe(place: str) -> MemoryProbe:
    name = place.lstrip("/")  # "GPU:N", as tf.config.experimental names devices
    level = [0]

    def reset() -> None:
        tf.test.experimental.sync_devices()
        tf.config.experimental.reset_memory_stats(name)
        level[0] = tf.config.experimental.get_memory_info(name)["current"]

    def peak_above() -> int:
        tf.test.experimental.sync_devices()
        return max(0, tf.config.experimental.get_memory_info(name)["peak"] - level[0])

    return MemoryProbe(reset, peak_above)
