"""The worker's side of ``normcheck model`` with --input/--input-shape: load the model, send its
inventory, run it once on the input to capture each norm layer's activation, then check each
layer and send its records (the engine's worker runs ``check`` for messages of kind KIND:
engine/worker.HANDLERS). Messages: ("inventory", Inventory), then ("layer", [CheckResult, ...])
per layer in the inventory's order; a UsageError (sent as "usage") for a model that cannot be
loaded or run on the input."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from normcheck.errors import UsageError
from normcheck.model.source import ModelSource

KIND = "model.check"


@dataclass(frozen=True)
class CheckTask:
    source: ModelSource
    input_shapes: tuple[tuple[int, ...], ...] = ()
    input_file: str | None = None
    kinds: tuple[str, ...] = ()
    seed: int = 0
    dtype: str | None = None  # cast the model (torch) to this dtype first
    runtime: str = "onnxruntime"  # ONNX: "onnxruntime" or "onnx-reference" (normcheck.model.onnx_checks.RUNTIMES)


def read_inputs(path: str) -> list[np.ndarray]:
    """The arrays of a .npy (one input) or .npz (one array per model input, in the file's order);
    never unpickles."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a .npy
            return [np.asarray(loaded)]
        with loaded as data:
            return [np.asarray(data[name]) for name in data.files]
    except (OSError, ValueError) as e:
        raise UsageError(f"--input {path}: not a readable .npy or .npz file ({e})") from None


def check(task: CheckTask, send: Callable[[Any], None]) -> None:
    import normcheck.model.loaders as loaders
    from normcheck.model.loaders import EXPORT, KERAS_MODEL, ONNX_MODEL, SCRIPT, TORCH, inspect_model, load_model

    start = time.perf_counter()
    loaded = load_model(task.source)
    if loaded.kind == loaders.LINEN and loaded.example is None and len(task.input_shapes) == 1:
        loaded.example = task.input_shapes[0]  # a linen model's @compact norm layers show their settings on it
    inventory = inspect_model(loaded, task.source.text)
    send(("inventory", replace(inventory, seconds=time.perf_counter() - start)))
    arrays = read_inputs(task.input_file) if task.input_file else None
    with tempfile.TemporaryDirectory(prefix="normcheck-model-") as folder:
        if loaded.kind == TORCH:
            from normcheck.model.torch_checks import check_torch

            check_torch(
                loaded.obj, inventory, task.input_shapes, arrays, task.kinds, task.seed, task.dtype, folder, send
            )
        elif loaded.kind in (SCRIPT, EXPORT):
            from normcheck.model.export_checks import check_program

            check_program(
                loaded.obj, inventory, task.input_shapes, arrays, task.kinds, task.seed, task.dtype, folder, send
            )
        elif loaded.kind == ONNX_MODEL:
            if task.dtype is not None:
                raise UsageError("--dtype casts a PyTorch model; an ONNX model runs in its own dtypes")
            from normcheck.model.onnx_checks import check_onnx

            check_onnx(loaded.obj, inventory, task.input_shapes, arrays, task.kinds, task.seed, send, task.runtime)
        elif loaded.kind == KERAS_MODEL:
            if task.dtype is not None:
                raise UsageError("--dtype casts a PyTorch model; a Keras model runs in its own dtype policy")
            from normcheck.model.keras_checks import check_keras

            check_keras(loaded.obj, inventory, task.input_shapes, arrays, task.kinds, task.seed, folder, send)
        elif loaded.kind in (loaders.LINEN, loaders.NNX):
            if task.dtype is not None:
                raise UsageError("--dtype casts a PyTorch model; a Flax model runs in its own dtypes")
            from normcheck.model.flax_checks import check_flax

            check_flax(loaded, inventory, task.input_shapes, arrays, task.kinds, task.seed, folder, send)
        else:
            raise UsageError(
                f"per-layer checks run on PyTorch, Keras, Flax and ONNX models, not on a {inventory.loader} model yet; "
                "--list shows its inventory"
            )
