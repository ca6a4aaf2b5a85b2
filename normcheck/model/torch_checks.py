"""Per-layer checks of a PyTorch model: capture each norm layer's input with forward pre-hooks (one
forward pass, each activation written to its own .npy file and dropped), then check each layer by
running the model's own module object on the captured activation and on the hostile input kinds,
forward and backward. User layers that look like norms are probed first. Imports torch; the
worker imports this module only for torch models."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch

from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.torch.adapter import TORCH_DTYPES
from normcheck.frameworks.torch.facts import MODULE_NAMES
from normcheck.model import checks
from normcheck.model.checks import LayerSetup, ProbeVariant
from normcheck.model.records import Inventory, NormLayer
from normcheck.model.torch_modules import ROOT_PATH
from normcheck.names import OpName
from normcheck.ops import OpParams
from normcheck.ops.rms_norm import default_eps
from normcheck.problem import Problem
from normcheck.verify.records import CheckResult

FRAMEWORK = "torch"
# where a candidate keeps its parameters, by role: the first attribute holding a tensor wins
ROLE_ATTRIBUTES = {
    "weight": ("weight", "scale", "gamma"),
    "bias": ("bias", "beta", "shift"),
    "running_mean": ("running_mean", "moving_mean"),
    "running_var": ("running_var", "moving_variance"),
}
GROUP_ATTRIBUTES = ("num_groups", "groups", "num_group", "G")
# eps values tried on a candidate that has no eps attribute
PROBE_EPS = (1e-5, 1e-6, 1e-8, 1e-12, float(np.finfo(np.float32).eps), 1e-3)


@dataclass(frozen=True)
class Names:
    """The attributes of the module holding each role's tensor (None: it has none)."""

    weight: str | None = None
    bias: str | None = None
    running_mean: str | None = None
    running_var: str | None = None


@dataclass(frozen=True)
class Captured:
    file: str
    dtype: str
    calls: int = 1


NUMPY_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}


def _np(t: torch.Tensor) -> np.ndarray:
    """A float64 copy (NumPy's cast: torch's own conversion is several times slower on big tensors)."""
    t = t.detach().to("cpu")
    if t.dtype in NUMPY_DTYPES:
        return t.numpy().astype(np.float64)
    return t.to(torch.float64).numpy()


def _torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    """``a`` (float64, exact in ``dtype``) as a new tensor of ``dtype``."""
    t = TORCH_DTYPES[dtype]
    if t in NUMPY_DTYPES:
        return torch.from_numpy(np.asarray(a).astype(NUMPY_DTYPES[t]))
    return torch.from_numpy(np.array(a, dtype=np.float64)).to(t)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def model_raised(e: BaseException, last: list[str], inputs: Sequence[torch.Tensor]) -> UsageError:
    """The one line saying the model raised on ``inputs``, and after which norm layer."""
    return checks.model_raised(e, last, ", ".join("x".join(map(str, t.shape)) + f" {_dtype(t)}" for t in inputs))


def _tensor_attr(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    try:
        value = getattr(module, name)
    except Exception:
        return None
    return value if isinstance(value, torch.Tensor) else None


def _names(module: torch.nn.Module) -> Names:
    found: dict[str, str | None] = {}
    for role, attrs in ROLE_ATTRIBUTES.items():
        found[role] = next((a for a in attrs if _tensor_attr(module, a) is not None), None)
    return Names(**found)


def _value(module: torch.nn.Module, name: str | None) -> np.ndarray | None:
    t = None if name is None else _tensor_attr(module, name)
    return None if t is None else _np(t)


# ---- inputs and capture -----------------------------------------------------------------------


def model_inputs(
    model: torch.nn.Module, shapes: tuple[tuple[int, ...], ...], arrays: list[np.ndarray] | None, seed: int
) -> list[torch.Tensor]:
    """The model's inputs: the arrays given, or seeded normal(0, 1) values of each shape in the
    dtype of the model's first floating parameter (float32 without one)."""
    if arrays is not None:
        return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = first.dtype if first is not None else torch.float32
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.standard_normal(shape)).to(dtype) for shape in shapes]


def _snapshot(modules: dict[str, torch.nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every buffer of the norm layers, with a copy: the capture pass must leave running
    statistics as they were (a model in training mode updates them)."""
    out = []
    for m in modules.values():
        for b in m.buffers(recurse=False):
            out.append((b, b.detach().clone()))
    return out


def capture(
    model: torch.nn.Module, modules: dict[str, torch.nn.Module], inputs: list[torch.Tensor], folder: str
) -> dict[str, Captured]:
    """Run the model once; each norm layer's first input goes to its own .npy file in ``folder``
    (bfloat16 saved as float32, which holds it exactly). UsageError when the model raises."""
    found: dict[str, Captured] = {}
    last: list[str] = []
    handles = []

    def hook_for(path: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            last.append(path)
            if path in found:
                found[path] = replace(found[path], calls=found[path].calls + 1)
                return
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return
            file = os.path.join(folder, f"{len(found)}.npy")
            t = x.detach().to("cpu")
            np.save(file, (t.float() if t.dtype == torch.bfloat16 else t).numpy())
            found[path] = Captured(file, _dtype(t))

        return hook

    saved = _snapshot(modules)
    try:
        for path, m in modules.items():
            handles.append(m.register_forward_pre_hook(hook_for(path)))
        with torch.no_grad():
            model(*inputs)
    except UsageError:
        raise
    except BaseException as e:
        raise model_raised(e, last, inputs) from None
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
    return found


# ---- a layer's setup ----------------------------------------------------------------------------


def builtin_setup(module: torch.nn.Module, record: NormLayer, dtype: str) -> LayerSetup | str:
    """A built-in layer's setup from the module itself; a string saying why there is none."""
    d = checks.dtype_name(dtype)
    if d is None or record.op is None:
        return f"activation dtype {dtype} is not one normcheck checks"
    op: OpName = record.op
    names = _names(module)
    w, b = _value(module, "weight"), _value(module, "bias")
    affine = w is not None or b is not None
    missing = _frozen_params(module, names)
    if op in ("bn", "in"):
        rm, rv = _value(module, "running_mean"), _value(module, "running_var")
        running = rm is not None and rv is not None
        training = bool(module.training)
        mode = "train" if (training or not running) else "eval"
        if op == "in" and not running:
            mode = "train"
        params = OpParams(mode=mode, running_stats=running, affine=affine)
        momentum = getattr(module, "momentum", 0.1)
        if momentum is None:  # cumulative average: this step's weight is 1 / (batches seen + 1)
            seen = _tensor_attr(module, "num_batches_tracked")
            momentum = 1.0 / (int(seen.item()) + 1 if seen is not None else 1)
        return LayerSetup(
            op,
            params,
            float(module.eps),
            d,
            float(momentum),
            w,
            b,
            rm if running else None,
            rv if running else None,
            True,
            missing,
        )
    if op == "gn":
        return LayerSetup(
            op, OpParams(groups=int(module.num_groups), affine=affine), float(module.eps), d, 0.1, w, b, missing=missing
        )
    shape = tuple(getattr(module, "normalized_shape", ()) or ())
    params = OpParams(normalized_ndim=len(shape) or 1, affine=affine)
    eps = getattr(module, "eps", None)
    return LayerSetup(op, params, default_eps(d) if eps is None else float(eps), d, 0.1, w, b, missing=missing)


def _frozen_params(module: torch.nn.Module, names: Names) -> dict[str, str]:
    """grad_weight / grad_bias cannot be had where the tensor is a buffer or not a tensor at all."""
    params = dict(module.named_parameters(recurse=False))
    out = {}
    for role, check in (("weight", "grad_weight"), ("bias", "grad_bias")):
        name = getattr(names, role)
        if name is not None and name not in params:
            out[check] = f"the layer's {role} ({name}) is a buffer, not a parameter: it has no gradient"
    return out


def _probe_variants(
    module: torch.nn.Module, record: NormLayer, names: Names, shape: tuple[int, ...]
) -> Iterator[ProbeVariant]:
    ndim = len(shape)
    ops: list[OpName] = [record.op] if record.op else ["rms", "ln"]
    eps_values = [float(record.eps)] if isinstance(record.eps, (int, float)) else list(PROBE_EPS)
    weight = _tensor_attr(module, names.weight) if names.weight else None
    for op in ops:
        if op in ("ln", "rms"):
            ks = [len(record.feature_shape)] if record.feature_shape else []
            if weight is not None:
                ks.append(weight.ndim)
            ks.append(1)
            param_list = [OpParams(normalized_ndim=k, affine=names.weight is not None) for k in dict.fromkeys(ks)]
        elif op == "gn":
            groups = next(
                (getattr(module, a) for a in GROUP_ATTRIBUTES if isinstance(getattr(module, a, None), int)),
                record.groups,
            )
            if not isinstance(groups, int):
                continue
            param_list = [OpParams(groups=groups, affine=names.weight is not None)]
        else:
            running = names.running_mean is not None and names.running_var is not None
            mode = "train" if (module.training or not running) else "eval"
            param_list = [OpParams(mode=mode, running_stats=running, affine=names.weight is not None)]
        for params in param_list:
            if params.normalized_ndim is not None and params.normalized_ndim > ndim:
                continue
            for eps in eps_values:
                for one_plus in (False, True) if weight is not None else (False,):
                    label = f"{op}, eps {eps:g}" + (", weight applied as 1 + w" if one_plus else "")
                    yield ProbeVariant(op, eps, params, one_plus, label)
        channels = weight is not None and weight.ndim == 1 and ndim >= 3 and weight.numel() == shape[1]
        if op in ("ln", "rms") and channels:  # over the channels of (N, C, ...): ConvNeXt's LayerNorm2d
            params = OpParams(normalized_ndim=1, affine=True)
            for eps in eps_values:
                for one_plus in (False, True):
                    label = f"{op} over the channels (axis 1), eps {eps:g}" + (
                        ", weight applied as 1 + w" if one_plus else ""
                    )
                    yield ProbeVariant(op, eps, params, one_plus, label, moved_axis=1)


def _setup_of(module: torch.nn.Module, names: Names, v: ProbeVariant, dtype: str) -> LayerSetup | None:
    d = checks.dtype_name(dtype)
    if d is None:
        return None
    w = _value(module, names.weight)
    b = _value(module, names.bias)
    if v.op == "rms" and b is not None:
        return None
    if w is not None and v.one_plus:
        w = w + 1.0
    rm = rv = None
    if v.params.running_stats:
        rm, rv = _value(module, names.running_mean), _value(module, names.running_var)
    momentum = getattr(module, "momentum", 0.1)
    momentum = float(momentum) if isinstance(momentum, (int, float)) else 0.1
    missing = _frozen_params(module, names)
    setup = LayerSetup(v.op, v.params, v.eps, d, momentum, w, b, rm, rv, True, missing, moved_axis=v.moved_axis)
    if v.moved_axis is not None:  # a per-channel weight broadcast over the other axes: one value per channel
        setup = replace(
            setup,
            weight=None if w is None else w.reshape(-1),
            bias=None if b is None else b.reshape(-1),
        )
    return setup


def _forward(module: torch.nn.Module, x: np.ndarray, dtype: str) -> np.ndarray | None:
    m = copy.deepcopy(module)
    with torch.no_grad():
        y = m(_torch(x, dtype))
    return _np(y) if isinstance(y, torch.Tensor) else None


def probe(module: torch.nn.Module, record: NormLayer, x: np.ndarray, dtype: str) -> tuple[LayerSetup, str] | str:
    """What a candidate computes, tried on its captured activation: the reference of the op its
    name suggests (or of RMS and layer norm), with its eps (or, without an eps attribute, each of
    PROBE_EPS, then confirmed on an input whose spread is near sqrt(eps)), its weight as w or as
    1 + w. (setup, what matched), or why none did."""
    names = _names(module)
    try:
        y = _forward(module, x, dtype)
    except Exception as e:
        return f"unconfirmed: the layer raised {checks.describe_error(e)} on its own input"
    if y is None:
        return "unconfirmed: the layer does not return a tensor"
    searched = not isinstance(record.eps, (int, float))
    ref = checks.to_reference_layout
    for v in _probe_variants(module, record, names, tuple(x.shape)):
        setup = _setup_of(module, names, v, dtype)
        if setup is None or not checks.forward_matches(setup, ref(x, setup), ref(y, setup)):
            continue
        if searched:  # the eps found only where it shows: data of spread sqrt(eps)
            rng = np.random.default_rng(0)
            from normcheck.dtypes import quantize

            small = quantize(math.sqrt(v.eps) * rng.standard_normal(x.shape), setup.dtype)
            try:
                ys = _forward(module, small, dtype)
            except Exception:
                continue
            if ys is None or not checks.forward_matches(setup, ref(small, setup), ref(ys, setup)):
                continue
        return setup, v.label
    if not searched:
        explained = _explained(module, record, names, x, dtype)
        if explained is not None:
            return explained
    return "unconfirmed: behaves like no normalization normcheck knows (probed on its captured input)"


def _explained(
    module: torch.nn.Module, record: NormLayer, names: Names, x: np.ndarray, dtype: str
) -> tuple[LayerSetup, str] | None:
    """A candidate that matches no op exactly but one op with one known mistake: checked on its
    captured input, every failing check of the case is reproduced by the same mistake
    (diagnosis with evidence, not ambiguous). Then it is that op, and its checks fail with that
    cause; anything less leaves it unconfirmed."""
    for v in _probe_variants(module, record, names, tuple(x.shape)):
        setup = _setup_of(module, names, v, dtype)
        xr = None if setup is None else checks.to_reference_layout(x, setup)
        if setup is None or xr is None:
            continue
        run: Callable[[Problem], RunOutput] = partial(_run_as, module, names, setup.moved_axis)
        cause = checks.one_mistake(FRAMEWORK, setup, xr, run)
        if cause is not None:
            return setup, f"{v.label}, but for one known mistake: {cause}"
    return None


# ---- running a layer --------------------------------------------------------------------------


def _run_as(module: torch.nn.Module, names: Names, moved_axis: int | None, problem: Problem) -> RunOutput:
    return run_module(module, problem, names, moved_axis)


def run_module(module: torch.nn.Module, problem: Problem, names: Names, moved_axis: int | None = None) -> RunOutput:
    """The layer itself (a copy of the model's module object, in its own mode) on the problem:
    forward, backward with dy, and the running statistics after the call. ``moved_axis``: the
    problem holds the layer's tensors with that axis moved last (LayerSetup.moved_axis)."""
    m = copy.deepcopy(module)
    for p in m.parameters(recurse=False):
        p.requires_grad_(True)
        p.grad = None
    x = _torch(problem.x, problem.dtype).requires_grad_(True)
    with torch.enable_grad():
        y = m(x if moved_axis is None else x.movedim(-1, moved_axis).contiguous())
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"the layer returned {type(y).__name__}, not a tensor")
        if moved_axis is not None:
            y = y.movedim(moved_axis, -1)
        y.backward(_torch(problem.dy, problem.dtype).to(y.dtype))
    out = RunOutput()
    out.add("forward", _np(y), _dtype(y))
    if x.grad is not None:
        out.add("grad_input", _np(x.grad), _dtype(x.grad))
    for role, check in (("weight", "grad_weight"), ("bias", "grad_bias")):
        t = _tensor_attr(m, getattr(names, role)) if getattr(names, role) else None
        if t is not None and t.grad is not None:
            out.add(check, _np(t.grad), _dtype(t.grad))
    if problem.params.running_stats:
        for role in ("running_mean", "running_var"):
            t = _tensor_attr(m, getattr(names, role)) if getattr(names, role) else None
            if t is not None:
                out.add(role, _np(t), _dtype(t))
    return out


def module_at(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    """The model's module at an inventory path (ROOT_PATH: the model itself)."""
    return dict(model.named_modules()).get("" if path == ROOT_PATH else path)


def runner_for(module: torch.nn.Module, record: NormLayer, x: np.ndarray, dtype: str) -> checks.LayerRunner | str:
    """The layer ``module`` (the inventory's ``record``) ready to run, given its input ``x`` (as
    the layer receives it; a candidate is probed on it); why not, as a string."""
    label = f"{record.path} ({record.kind})"
    names = _names(module)
    if record.confirmed:
        setup: LayerSetup | str = builtin_setup(module, record, dtype)
    else:
        found = probe(module, record, x, dtype)
        if isinstance(found, str):
            return found
        setup, how = found
        label = f"{record.path} ({record.kind}; probed: {how})"
    if isinstance(setup, str):
        return setup
    if record.confirmed and setup.op in MODULE_NAMES:  # PyTorch's own layer: its documented defects are known
        setup = replace(setup, known_impl=MODULE_NAMES[setup.op])
    moved_axis = setup.moved_axis
    permutation = None
    if moved_axis is not None:
        axis = moved_axis % x.ndim
        permutation = (*(a for a in range(x.ndim) if a != axis), axis)
    return checks.LayerRunner(
        setup,
        lambda problem: run_module(module, problem, names, moved_axis),
        label,
        FRAMEWORK,
        permutation=permutation,
    )


def check_layer(
    module: torch.nn.Module, record: NormLayer, captured: Captured | None, kinds: tuple[str, ...], seed: int
) -> list[CheckResult]:
    label = f"{record.path} ({record.kind})"
    if captured is None:
        return [
            checks.layer_row(
                label, FRAMEWORK, "skip", "not called by the model's forward on this input", record.op, record.dtype
            )
        ]
    x = np.load(captured.file).astype(np.float64)
    runner = runner_for(module, record, x, captured.dtype)
    if isinstance(runner, str):
        return [checks.layer_row(label, FRAMEWORK, "skip", runner, record.op, captured.dtype)]
    return runner.rows(x, kinds, seed, record.path, captured.calls)


def check_torch(
    model: torch.nn.Module,
    inventory: Inventory,
    shapes: tuple[tuple[int, ...], ...],
    arrays: list[np.ndarray] | None,
    kinds: tuple[str, ...],
    seed: int,
    cast: str | None,
    folder: str,
    send: Callable[[Any], None],
) -> None:
    """Capture, then send ("layer", rows) for each layer of the inventory, in its order."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UsageError(
            "per-layer checks need an eager torch.nn.Module (TorchScript modules take no hooks); "
            "give the code building the model as path/to/file.py:NAME"
        )
    if cast is not None:
        model = model.to(TORCH_DTYPES[cast])
    all_modules = dict(model.named_modules())
    modules = {
        layer.path: all_modules["" if layer.path == ROOT_PATH else layer.path]
        for layer in inventory.layers
        if ("" if layer.path == ROOT_PATH else layer.path) in all_modules
    }
    inputs = model_inputs(model, shapes, arrays, seed)
    found = capture(model, modules, inputs, folder)
    # one thread for the layers' own runs: their tensors are small next to the model's, and the
    # reductions then sum in one fixed order whatever the machine (verify's workers do the same)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_all(inventory, modules, found, kinds, seed, send)
    finally:
        torch.set_num_threads(threads)  # inline (tests), this is the caller's process


def _check_all(
    inventory: Inventory,
    modules: dict[str, torch.nn.Module],
    found: dict[str, Captured],
    kinds: tuple[str, ...],
    seed: int,
    send: Callable[[Any], None],
) -> None:
    for layer in inventory.layers:
        module = modules.get(layer.path)
        if module is None:
            rows = [
                checks.layer_row(
                    f"{layer.path} ({layer.kind})",
                    FRAMEWORK,
                    "skip",
                    "not a module of the model",
                    layer.op,
                    layer.dtype,
                )
            ]
        else:
            rows = check_layer(module, layer, found.get(layer.path), kinds, seed)
        cap = found.get(layer.path)
        if cap is not None:
            os.unlink(cap.file)  # each activation leaves the disk once its layer is checked
        send(("layer", rows))
