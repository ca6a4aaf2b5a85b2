"""The norm layers of a torch.export program (a .pt2 file): every aten norm call of its graph, named
by the module that made it (the node's nn_module_stack), with the call's own eps, momentum and
mode, and the weights from the program's state. Imports torch."""

from __future__ import annotations

from typing import Any

import torch

from normcheck.model import candidates
from normcheck.model.records import BUILT_IN, CUMULATIVE, EVAL, MACHINE_EPS, NEW, TRAIN, Findings, NormLayer
from normcheck.model.torch_modules import BUILT_INS, FRAMEWORK, ROOT_PATH, TORCH_NN, tensor_summary
from normcheck.names import OpName

# aten op (schema name without "aten::") -> norm op
ATEN_OPS: dict[str, OpName] = {
    "batch_norm": "bn",
    "native_batch_norm": "bn",
    "_native_batch_norm_legit": "bn",
    "_native_batch_norm_legit_no_training": "bn",
    "_native_batch_norm_legit_functional": "bn",
    "cudnn_batch_norm": "bn",
    "instance_norm": "in",
    "group_norm": "gn",
    "native_group_norm": "gn",
    "layer_norm": "ln",
    "native_layer_norm": "ln",
    "rms_norm": "rms",
    "_fused_rms_norm": "rms",
}
ROLES = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def call_args(node: Any) -> dict[str, Any]:
    """The call's arguments by schema name, defaults filled in."""
    schema = node.target._schema
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


def _module_of(node: Any) -> tuple[str, str]:
    """(path, class as "module.Class") of the innermost module that made the call."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    if not isinstance(cls, str):
        cls = f"{cls.__module__}.{cls.__qualname__}"
    return str(path), cls


def _tensor_for(program: Any, arg: Any) -> tuple[str, Any]:
    """(state name, tensor) of a placeholder the call reads, else ("", None)."""
    if not isinstance(arg, torch.fx.Node) or arg.op != "placeholder":
        return "", None
    sig = program.graph_signature
    name = (
        sig.inputs_to_parameters.get(arg.name)
        or sig.inputs_to_buffers.get(arg.name)
        or getattr(sig, "inputs_to_lifted_tensor_constants", {}).get(arg.name)
    )
    if name is None:
        return "", None
    tensor = program.state_dict.get(name)
    if tensor is None:
        tensor = program.constants.get(name)
    return name, tensor


def _stack(node: Any) -> list[tuple[str, str]]:
    """(path, class as "module.Class") of every module the call was made in, outermost first."""
    out = []
    for path, cls in (node.meta.get("nn_module_stack") or {}).values():
        out.append((str(path), cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"))
    return out


def aten_op_name(node: Any) -> str | None:
    """The node's aten norm op (a key of ATEN_OPS), or None for any other node."""
    if node.op != "call_function" or not hasattr(node.target, "_schema"):
        return None
    op_name = str(node.target._schema.name).removeprefix("aten::")
    return op_name if op_name in ATEN_OPS else None


def inspect_program(program: Any) -> Findings:
    """The aten norm calls, and the user modules named like norms, in the graph's order."""
    found = Findings()
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for node in program.graph.nodes:
        for path, cls in _stack(node):
            if path and path not in seen:
                seen.add(path)
                _maybe_candidate(program, path, cls, found)
        op_name = aten_op_name(node)
        if op_name is not None:
            path, cls = _module_of(node)
            found.add(_record(program, node, ATEN_OPS[op_name], op_name, path, cls, counts))
    return found


def norm_calls(program: Any) -> dict[str, Any]:
    """Every aten norm call of the graph (its node) by the path inspect_program gives its record."""
    counts: dict[str, int] = {}
    out: dict[str, Any] = {}
    for node in program.graph.nodes:
        op_name = aten_op_name(node)
        if op_name is not None:
            path, cls = _module_of(node)
            out[_path_and_kind(ATEN_OPS[op_name], op_name, path, cls, counts)[0]] = node
    return out


def _path_and_kind(op: OpName, op_name: str, path: str, cls: str, counts: dict[str, int]) -> tuple[str, str]:
    """A call's record path and kind: a built-in module's own path, else ``module/op`` (``#2`` for a
    module's second call of the op)."""
    where, _, class_name = cls.rpartition(".")
    builtin = where.startswith(TORCH_NN) and BUILT_INS.get(class_name) == op
    kind = f"torch.nn.{class_name}" if builtin else f"aten.{op_name}" + (f" in {cls}" if cls else "")
    base = path or ROOT_PATH
    if not builtin:
        base = f"{base}/{op_name}"
    counts[base] = counts.get(base, 0) + 1
    return (base if counts[base] == 1 else f"{base}#{counts[base]}"), kind


def _maybe_candidate(program: Any, path: str, cls: str, found: Findings) -> None:
    where, _, name = cls.rpartition(".")
    if where.startswith("torch.") or not candidates.looks_like_norm(name):
        return
    params = tuple(
        s
        for attr, role in candidates.PARAM_NAMES.items()
        if (s := _state_summary(program, role, f"{path}.{attr}")) is not None
    )
    note = "torch.export keeps no module attributes: eps is not known before the layer is probed"
    found.add(candidates.candidate(path, cls, FRAMEWORK, name, None, params, (note,)))


def _state_summary(program: Any, role: str, name: str) -> Any:
    tensor = program.state_dict.get(name)
    if tensor is None:
        tensor = program.constants.get(name)
    return tensor_summary(role, name, tensor)


def _record(
    program: Any, node: Any, op: OpName, op_name: str, path: str, cls: str, counts: dict[str, int]
) -> NormLayer:
    args = call_args(node)
    record_path, kind = _path_and_kind(op, op_name, path, cls, counts)
    params = []
    for arg_name, role in ROLES.items():
        state, tensor = _tensor_for(program, args.get(arg_name))
        summary = tensor_summary(role, state, tensor)
        if summary is not None:
            params.append(summary)
    x = args.get("input")
    val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    dtype = str(val.dtype).removeprefix("torch.") if val is not None and hasattr(val, "dtype") else None
    rank = len(val.shape) if val is not None and hasattr(val, "shape") else None
    eps = args.get("eps")
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if op in ("bn", "in"):
        running = args.get("running_mean") is not None
        momentum = args.get("momentum")
        if op_name == "_native_batch_norm_legit_no_training":
            training = False
        elif op == "in":
            training = bool(args.get("use_input_stats", True))
        else:
            training = bool(args.get("training", False))
        fields.update(
            channel_axis=1,
            running_stats=running,
            momentum=None if momentum is None else float(momentum),
            momentum_weights=(NEW if momentum is not None else CUMULATIVE) if running else None,
            mode=(TRAIN if training else EVAL) if running or op == "bn" else None,
        )
        if rank is not None:
            fields["axes"] = (0, *range(2, rank)) if op == "bn" else tuple(range(2, rank))
    elif op == "gn":
        groups = args.get("num_groups", args.get("group"))
        fields.update(groups=int(groups) if isinstance(groups, int) else None, channel_axis=1)
    else:
        shape = args.get("normalized_shape")
        if isinstance(shape, (list, tuple)) and all(isinstance(n, int) for n in shape):
            fields.update(axes=tuple(range(-len(shape), 0)), feature_shape=tuple(int(n) for n in shape))
    if eps is None and op == "rms":
        eps_value: float | str | None = MACHINE_EPS
    else:
        eps_value = float(eps) if isinstance(eps, (int, float)) else None
    weight = args.get("weight") is not None
    if "feature_shape" not in fields:
        w = next((p for p in params if p.role == "weight" and p.shape), None)
        if w is not None and w.shape:
            fields["feature_shape"] = w.shape
    return NormLayer(
        path=record_path,
        op=op,
        kind=kind,
        framework=FRAMEWORK,
        confirmed=True,
        basis=BUILT_IN,
        eps=eps_value,
        weight=weight,
        bias=args.get("bias") is not None,
        dtype=dtype,
        params=tuple(params),
        notes=tuple(notes),
        **fields,
    )
