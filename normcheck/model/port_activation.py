"""``normcheck port --input-shape/--input``: a layer and its port run on the same real activation.

Two workers, one per model, meet in a private folder the parent makes:

1. the source's worker (KIND_SOURCE) loads the source, sends its inventory, runs it once on the
   input capturing every norm layer's input, and for each layer writes, in the reference's layout,
   the activation, the layer's own outputs on it (forward, gradients) and what the layer computes
   (its LayerSetup), then sends ("captured", (index, why-not-or-None));
2. once the parent has paired the layers, the port's worker (KIND_PORT) loads the port, and for
   each pair puts the source's activation into the port layer's layout, runs the port's layer on
   it with the same upstream gradient, and judges it against the float64 reference of the
   **source's** configuration (verify's tolerance rule and diagnosis) and against the source
   layer's own outputs. It sends ("activation", (pair index, [Finding, ...])).

Only Findings (plain records) reach the parent; activations and setups stay in the folder, written
and read by the workers (which run the user's code anyway).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.model.checks import CAPTURED, LayerRunner, LayerSetup, captured_problem, channels_last_permutation
from normcheck.model.port import ACTIVATION, ERROR, INFO, WARNING, Finding
from normcheck.model.records import PER_CALL, NormLayer
from normcheck.model.source import ModelSource
from normcheck.verify.records import FAIL, PASS, CheckResult

KIND_SOURCE = "model.port_source"
KIND_PORT = "model.port_run"
PROPERTY = "max abs error on the real activation"
SEED_KEY = "port"  # both workers draw the upstream gradient of a pair from this key: the same dy


@dataclass(frozen=True)
class SourceTask:
    source: ModelSource
    folder: str
    input_shapes: tuple[tuple[int, ...], ...] = ()
    input_file: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class PortTask:
    source: ModelSource
    folder: str
    pairs: tuple[tuple[int, int, str], ...]  # (pair index, the source layer's inventory index, the port's layer path)
    seed: int = 0


# ---- files in the folder ------------------------------------------------------------------------


def _file(folder: str, index: int, what: str) -> str:
    return os.path.join(folder, f"src{index}.{what}")


def _save_run(path: str, out: RunOutput) -> None:
    arrays: dict[str, Any] = {f"value_{k}": v for k, v in out.values.items()}
    arrays.update({f"dtype_{k}": np.array(d) for k, d in out.dtypes.items()})
    np.savez(path, **arrays)


def _load_run(path: str) -> RunOutput:
    out = RunOutput()
    with np.load(path, allow_pickle=False) as data:
        for name in data.files:
            if name.startswith("value_"):
                check = name.removeprefix("value_")
                out.add(check, data[name], str(data[f"dtype_{check}"]))
    return out


# ---- each framework's capture and runners -------------------------------------------------------


def _capture(loaded: Any, inventory: Any, task: SourceTask, folder: str) -> dict[str, tuple[str, str]]:
    """Each norm layer's input, as the layer receives it: {path: (.npy file, dtype name)}."""
    from normcheck.model.check_task import read_inputs
    from normcheck.model.loaders import EXPORT, KERAS_MODEL, LINEN, NNX, ONNX_MODEL, SCRIPT, TORCH

    arrays = read_inputs(task.input_file) if task.input_file else None
    if loaded.kind in (SCRIPT, EXPORT):
        from normcheck.model import export_checks

        found_program = export_checks.capture_layers(
            loaded.obj, inventory, task.input_shapes, arrays, task.seed, folder
        )
        return {path: (c.file, c.dtype) for path, c in found_program.items()}
    if loaded.kind == TORCH:
        from normcheck.model import torch_checks

        model = loaded.obj
        modules = {
            layer.path: m for layer in inventory.layers if (m := torch_checks.module_at(model, layer.path)) is not None
        }
        inputs = torch_checks.model_inputs(model, task.input_shapes, arrays, task.seed)
        found = torch_checks.capture(model, modules, inputs, folder)
        return {path: (c.file, c.dtype) for path, c in found.items()}
    if loaded.kind == ONNX_MODEL:
        from normcheck.model import onnx_checks

        feeds = onnx_checks.model_feeds(loaded.obj, task.input_shapes, arrays, task.seed)
        values = onnx_checks.capture(loaded.obj, [layer.input for layer in inventory.layers if layer.input], feeds)
        out = {}
        for k, layer in enumerate(inventory.layers):
            if layer.input in values:
                file = os.path.join(folder, f"capture{k}.npy")
                np.save(file, values[layer.input])
                out[layer.path] = (file, str(values[layer.input].dtype))
        return out
    if loaded.kind == KERAS_MODEL:
        from normcheck.model import keras_checks

        every = keras_checks.layers_of(loaded.obj)
        layers = {layer.path: every[layer.path] for layer in inventory.layers if layer.path in every}
        inputs = keras_checks.model_inputs(loaded.obj, task.input_shapes, arrays, task.seed)
        found_keras = keras_checks.capture(loaded.obj, layers, inputs, folder)
        return {path: (c.file, c.dtype) for path, c in found_keras.items()}
    if loaded.kind in (LINEN, NNX):
        from normcheck.model import flax_checks

        flax_model = flax_checks.as_flax_model(loaded)
        if isinstance(flax_model, str):
            raise UsageError(flax_model)
        paths = {layer.path for layer in inventory.layers}
        inputs_flax = flax_checks.model_inputs(flax_model, task.input_shapes, arrays, task.seed)
        if flax_model.kind == "linen":
            found_flax = flax_checks.capture_linen(flax_model, paths, inputs_flax, task.seed, folder)
        else:
            found_flax = flax_checks.capture_nnx(flax_model, paths, inputs_flax, folder)
        return {path: (c.file, c.dtype) for path, c in found_flax.items() if c.file is not None}
    raise UsageError(
        f"a port's source is run on the input as PyTorch code, a Keras or Flax model or an ONNX file, not as "
        f"{_what(loaded)} yet; without --input-shape/--input the configurations are compared"
    )


def _what(loaded: Any) -> str:
    return f"a {loaded.kind}"


class Runners:
    """``runner_for`` of one loaded model, whatever its framework."""

    def __init__(self, loaded: Any) -> None:
        from normcheck.model.loaders import EXPORT, KERAS_MODEL, LINEN, NNX, ONNX_MODEL, SCRIPT, TORCH

        self.loaded = loaded
        self.graph: Any = None
        if loaded.kind == ONNX_MODEL:
            from normcheck.model.onnx_checks import graph_view

            self.graph = graph_view(loaded.obj)
        elif loaded.kind not in (TORCH, SCRIPT, EXPORT, KERAS_MODEL, LINEN, NNX):
            raise UsageError(
                f"a port's layers run on the source's activations in PyTorch, Keras, Flax or ONNX Runtime, not in "
                f"{_what(loaded)} yet; without --input-shape/--input the configurations are compared"
            )

    def runner(self, layer: NormLayer, x: np.ndarray, dtype: str, training: bool = False) -> LayerRunner | str:
        """``training``: the source's layer normalized with the batch's statistics, so a port's layer
        whose mode each call chooses (Keras's ``training=``) is called in training too."""
        from normcheck.model.loaders import EXPORT, KERAS_MODEL, LINEN, NNX, ONNX_MODEL, SCRIPT

        if self.loaded.kind in (SCRIPT, EXPORT):
            from normcheck.model import export_checks

            return export_checks.runner_for(self.loaded.obj, layer, x, dtype)
        if self.loaded.kind in (LINEN, NNX):
            from normcheck.model import flax_checks

            return flax_checks.runner_for(self.loaded, layer, x, dtype)
        if self.loaded.kind == KERAS_MODEL:
            from normcheck.model import keras_checks

            return keras_checks.runner_for(
                self.loaded.obj, layer, x, dtype, training=training and layer.mode == PER_CALL
            )
        if self.loaded.kind == ONNX_MODEL:
            from normcheck.model.onnx_checks import ERROR_PREFIX, runner_for

            found = runner_for(self.loaded.obj, self.graph, layer, x.astype(_numpy_dtype(dtype)))
            return found.removeprefix(ERROR_PREFIX) if isinstance(found, str) else found
        from normcheck.model import torch_checks

        if not hasattr(self.loaded.obj, "named_modules"):
            return "not an eager PyTorch module"
        module = torch_checks.module_at(self.loaded.obj, layer.path)
        if module is None:
            return "not a module of the model"
        return torch_checks.runner_for(module, layer, x, dtype)


def _numpy_dtype(dtype: str) -> type:
    return {"float64": np.float64, "float32": np.float32, "float16": np.float16}.get(dtype, np.float32)


# ---- the source's worker ------------------------------------------------------------------------


def run_source(task: SourceTask, send: Callable[[Any], None]) -> None:
    """Inventory, capture, then for each layer: its activation (reference layout), its own outputs
    on it and its setup, in the folder; ("captured", index, None or why not) per layer."""
    from normcheck.model.checks import describe_error
    from normcheck.model.loaders import inspect_model, load_model

    loaded = load_model(task.source)
    inventory = inspect_model(loaded, task.source.text)
    send(("inventory", inventory))
    found = _capture(loaded, inventory, task, task.folder)
    runners = Runners(loaded)
    for k, layer in enumerate(inventory.layers):
        if layer.path not in found:
            send(("captured", (k, "not called by the model's forward on this input")))
            continue
        file, dtype = found[layer.path]
        x = np.load(file).astype(np.float64)
        os.unlink(file)
        runner = runners.runner(layer, x, dtype)
        if isinstance(runner, str):
            send(("captured", (k, runner)))
            continue
        x_ref = runner.to_reference(x)
        problem = captured_problem(runner.setup, x_ref, task.seed, SEED_KEY)
        try:
            with np.errstate(all="ignore"):
                out = runner.run(problem)
        except Exception as e:
            send(("captured", (k, f"the source's layer raised {describe_error(e)}")))
            continue
        np.save(_file(task.folder, k, "x.npy"), x_ref)
        _save_run(_file(task.folder, k, "out.npz"), out)
        with open(_file(task.folder, k, "setup.pickle"), "wb") as f:
            pickle.dump(runner.setup, f)
        send(("captured", (k, None)))


# ---- the port's worker --------------------------------------------------------------------------


def port_layout(layer: NormLayer, x_ref: np.ndarray) -> np.ndarray:
    """The reference-layout activation as the port's layer takes it: its channels where it keeps them."""
    if layer.op in ("bn", "in", "gn"):
        permutation = channels_last_permutation(x_ref.ndim, layer.channel_axis)
        if permutation is not None:
            return np.transpose(x_ref, tuple(int(i) for i in np.argsort(permutation)))
    return x_ref


def run_port(task: PortTask, send: Callable[[Any], None]) -> None:
    from normcheck.model.loaders import inspect_model, load_model

    loaded = load_model(task.source)
    inventory = inspect_model(loaded, task.source.text)
    layers = {layer.path: layer for layer in inventory.layers}
    runners = Runners(loaded)
    for index, src_index, dst_path in task.pairs:
        layer = layers.get(dst_path)
        findings = (
            [_finding(INFO, "—", "—", "the port's layer is not in its inventory when loaded again: not run")]
            if layer is None
            else compare_on_activation(runners, layer, task.folder, src_index, task.seed)
        )
        send(("activation", (index, findings)))


def _finding(severity: str, src: str, dst: str, rule: str, detail: str = "") -> Finding:
    return Finding(PROPERTY, severity, src, dst, rule, detail, ACTIVATION)


def compare_on_activation(runners: Runners, layer: NormLayer, folder: str, src_index: int, seed: int) -> list[Finding]:
    """The port's layer on the source layer's activation, judged against the reference of the
    source's configuration and against the source layer's own outputs."""
    from normcheck.model.checks import case_for, describe_error, judge_run

    with open(_file(folder, src_index, "setup.pickle"), "rb") as f:
        src_setup: LayerSetup = pickle.load(f)
    x_ref = np.load(_file(folder, src_index, "x.npy"))
    src_out = _load_run(_file(folder, src_index, "out.npz"))
    x_dst = port_layout(layer, x_ref)
    training = src_setup.params.mode == "train" and src_setup.params.running_stats
    runner = runners.runner(layer, x_dst, src_setup.dtype, training)
    if isinstance(runner, str):
        return [_finding(INFO, "—", "—", f"the port's layer was not run on the activation: {runner}")]
    if runner.to_reference(x_dst).shape != x_ref.shape:
        return [_finding(WARNING, "—", "—", "the port's layer takes the activation in a layout normcheck cannot map")]
    setup = src_setup
    if runner.setup.dtype != src_setup.dtype:  # the port computes in another dtype: judged with that dtype's tolerance
        from normcheck.dtypes import quantize

        setup = replace(
            src_setup,
            dtype=runner.setup.dtype,
            weight=None if src_setup.weight is None else quantize(src_setup.weight, runner.setup.dtype),
            bias=None if src_setup.bias is None else quantize(src_setup.bias, runner.setup.dtype),
        )
    # the source's own configuration, with what the port's layer itself cannot give
    setup = replace(setup, missing=runner.setup.missing, drop=runner.setup.drop, known_impl=None)
    weights = compare_weights(src_setup, runner.setup)
    problem = captured_problem(setup, x_ref, seed, SEED_KEY)
    src_problem = captured_problem(src_setup, x_ref, seed, SEED_KEY)
    case = case_for(runner.label, runner.framework, setup, problem.shape, CAPTURED)
    try:
        with np.errstate(all="ignore"):
            out = runner.run(problem)
    except Exception as e:
        return [_finding(ERROR, "runs", "raises", f"the port's layer raised {describe_error(e)} on the activation")]
    dst_rows = [r for r in judge_run(case, problem, setup, out) if r.status in (PASS, FAIL)]
    src_rows = {r.check: r for r in judge_run(case, src_problem, replace(src_setup, known_impl=None), src_out)}
    found = _findings(dst_rows, src_rows, src_out, out, problem.dtype == src_problem.dtype)
    if weights:  # what the output's diagnosis cannot know: the port applies other values
        unknown = " (cause unknown)"
        seen = f" (the port's {' and '.join(w.property for w in weights)} values differ from the source's: above)"
        found = [replace(f, rule=f.rule.replace(unknown, seen)) for f in found]
    return weights + found


ROLE_TITLES = {
    "weight": "weight (γ)",
    "bias": "bias (β)",
    "running_mean": "running mean",
    "running_var": "running variance",
}


def compare_weights(src: LayerSetup, dst: LayerSetup) -> list[Finding]:
    """The values of each weight, bias and running statistic the two layers apply (in the
    reference's order: per channel, or the normalized shape), equal after rounding both to the
    coarser of their dtypes. Presence and shape are the configuration comparison's."""
    from normcheck.dtypes import quantize

    coarse = max((src.dtype, dst.dtype), key=lambda d: float(np.finfo(_numpy_dtype(d)).eps) if d != "bfloat16" else 1.0)
    out = []
    for role, title in ROLE_TITLES.items():
        a, b = getattr(src, role), getattr(dst, role)
        if a is None or b is None or np.size(a) != np.size(b):
            continue
        qa = quantize(np.asarray(a, dtype=np.float64).reshape(-1), coarse)
        qb = quantize(np.asarray(b, dtype=np.float64).reshape(-1), coarse)
        if np.array_equal(qa, qb, equal_nan=True):
            continue
        running = role.startswith("running")
        severity = ERROR if not running or src.params.mode == "eval" else WARNING
        if np.array_equal(np.sort(qa), np.sort(qb)):
            rule = "the same values in another order: copied with its channels permuted"
            detail = ""
        else:
            i = int(np.nanargmax(np.abs(qa - qb)))
            rule = "other values: not copied from the source (or copied from another layer)"
            detail = f"largest difference at index {i}: {qa[i]:.6g} vs {qb[i]:.6g}"
        if running and severity == WARNING:
            rule += "; the layer normalizes with the batch's statistics here, so only training continues from them"
        out.append(Finding(title, severity, f"{np.size(a)} values", f"{np.size(b)} values", rule, detail, ACTIVATION))
    return out


def _err(row: CheckResult | None) -> str:
    """A check's max abs error against the reference, as a finding's value: '1.7e-07', 'error', '—'."""
    if row is None:
        return "—"
    if row.comparison is None:
        return row.status
    return f"{row.comparison.max_abs_err:.2g}"


def _findings(
    dst_rows: list[CheckResult], src_rows: dict[str, CheckResult], src_out: RunOutput, out: RunOutput, same_dtype: bool
) -> list[Finding]:
    """Per check the port's layer gave: (source's, port's) max abs error against the float64
    reference of the source's configuration, an error where the port's alone is beyond tolerance."""
    if not dst_rows:
        return [_finding(INFO, "—", "—", "nothing the port's layer returned could be compared")]
    failing = [r for r in dst_rows if r.status == FAIL]
    if not failing:
        checks = ", ".join(r.check for r in dst_rows)
        first = next((r for r in dst_rows if r.check == "forward"), dst_rows[0])
        return [
            _finding(
                INFO,
                _err(src_rows.get(first.check)),
                _err(first),
                "the port's layer computes the source's configuration on the real activation",
                f"{checks} within tolerance of the float64 reference; {first.check}'s max abs error shown",
            )
        ]
    out_findings = []
    for r in failing:
        src = src_rows.get(r.check)
        src_fails = src is not None and src.status == FAIL
        between = _between(src_out, out, r) if same_dtype else None
        detail = r.message
        if between is not None:
            detail = f"{detail}; port vs source: max abs diff {between[0]:.3g}"
        cause = r.diagnosis.cause if r.diagnosis is not None and r.diagnosis.hypothesis else None
        if src_fails and between is not None and between[1]:
            rule = (
                f"{r.check}: the source and the port differ from the float64 reference here, the same way: "
                "a defect of the source's layer, kept by the port"
            )
            out_findings.append(_finding(WARNING, _err(src), _err(r), rule, detail))
            continue
        rule = f"{r.check} of the port's layer on the source's activation is off"
        rule += f": {cause}" if cause else " (cause unknown)"
        if r.diagnosis is not None and r.diagnosis.fix:
            rule += f"; {r.diagnosis.fix}"
        out_findings.append(_finding(ERROR, _err(src), _err(r), rule, detail))
    return out_findings


def _between(src: RunOutput, port: RunOutput, row: CheckResult) -> tuple[float, bool] | None:
    """(max abs difference, whether within the row's tolerance) of the port's output from the source's."""
    from normcheck.verify.tolerance import compare

    check = row.check
    if check not in src.values or check not in port.values or src.values[check].shape != port.values[check].shape:
        return None
    if row.tolerance is None:
        return None
    c = compare(port.values[check], src.values[check], row.tolerance)
    return c.max_abs_err, c.mismatched == 0


def with_activations(comparison: Any, captured: dict[int, str | None], findings: dict[int, list[Finding]]) -> Any:
    """The comparison with each pair's activation findings added: those of the port's run, or
    why the source's layer gave no activation to run it on."""
    index = {id(layer): k for k, layer in enumerate(comparison.src.layers)}
    pairs = []
    for k, pair in enumerate(comparison.pairs):
        if k in findings:
            pair = pair.with_findings(*findings[k])
        elif pair.src is not None and pair.dst is not None:
            why = captured.get(index.get(id(pair.src), -1), "the source's layer was not run")
            if why:
                pair = pair.with_findings(_finding(INFO, "—", "—", f"not run on an activation: {why}"))
        pairs.append(pair)
    notes = (*comparison.notes, ACTIVATION_NOTE)
    return replace(comparison, pairs=tuple(pairs), notes=notes)


ACTIVATION_NOTE = (
    "each paired layer ran on the source layer's real activation (the port's in its own layout), both judged "
    "against the float64 reference of the source's configuration with verify's tolerance rule"
)
