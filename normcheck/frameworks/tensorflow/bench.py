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
    training = problem.params.mode == "train" or not problem.params.running_stats

    def forward(x: tf.Tensor) -> tf.Tensor:
        return bound.forward(x, training)

    fn: Callable[[tf.Tensor], tf.Tensor] = forward
    if variant != "eager":
        tf.get_logger().setLevel(QUIET)  # set here: importing Keras or absl may reset it
        fn = tf.function(forward, jit_compile=variant == XLA)
    x = on_device(problem.x, problem.dtype, lay)
    cuda = device.startswith("cuda")
    common: dict[str, Any] = {
        "mode": variant,
        "compiled": variant != "eager",
        "layout": lay,
        "sync": device_sync(cuda),
        "memory": memory_probe(place) if cuda else None,
    }
    if pass_ == FORWARD:

        def call() -> tf.Tensor:
            with tf.device(place):
                return fn(x)

        return Target(call, keep=[x, bound, fn], **common)

    sources = [x, *variables(bound)]
    dy = on_device(problem.dy, problem.dtype, lay)
    start = time.perf_counter()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = fn(x)  # the forward every timed backward differentiates (a traced call under tf.function)
    if cuda:
        tf.test.experimental.sync_devices()
    setup = time.perf_counter() - start

    def backward() -> list[tf.Tensor]:
        with tf.device(place):
            return tape.gradient(y, sources, output_gradients=dy)

    return Target(
        backward, keep=[x, y, dy, tape, bound, fn], setup_compile_s=setup if variant != "eager" else 0.0, **common
    )


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
