"""Per-layer checks of a torch.export program (a .pt2 file, or an ExportedProgram from code) and of
a TorchScript module (a .pt file, scripted or traced): capture each norm layer's input in one run
of the model (each activation written to its own .npy file and dropped), then check each layer on
that activation and on the hostile input kinds, forward and backward. Imports torch; the worker
imports this module only for these models.

**torch.export.** A layer is one aten norm call of the program's graph (normcheck.model.torch_export
lists them, by the module that made each). The graph runs once in a ``torch.fx.Interpreter`` on the
program's own parameters, buffers (copies: a program in training mode updates its running
statistics) and constants; the interpreter writes each norm node's input as it reaches it. A layer
is checked by calling its aten op itself (``torch.ops.aten.batch_norm``,
``_native_batch_norm_legit_no_training``, ``_native_batch_norm_legit_functional``,
``native_group_norm``, ``layer_norm``, ``rms_norm``, ...) with the node's own constant arguments
and the program's own tensors for its weight, bias and running statistics, under autograd. A user
module named like a norm has no norm call in the graph (torch.export decomposes its forward into
elementary ops): it is a skip row, never probed on a guess.

**TorchScript.** TorchScript modules take no Python hooks. A copy of the model's forward graph has
every ``prim::CallMethod`` of a submodule replaced by the body of that submodule's method, so that
each call of a norm layer shows in one graph with its module's path (the ``prim::GetAttr`` chain
from ``self``); before each such call a node of normcheck's own op (``normcheck_capture::save``,
registered here with ``torch.library``) writes the call's input. The model's own graph and modules
are left as they are; the graph copy runs once on the model's own state, and the buffers are
restored after it. A layer is checked by running the model's own (scripted or traced) submodule,
as normcheck.model.torch_checks runs an eager one; a traced layer keeps no attributes, so its eps,
momentum, groups and mode are read from the constants of its traced graph.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.torch.adapter import TORCH_DTYPES
from normcheck.frameworks.torch.facts import FUNCTIONAL_NAMES, MODULE_NAMES
from normcheck.model import checks, torch_checks
from normcheck.model.checks import LayerSetup
from normcheck.model.records import BUILT_IN, CUMULATIVE, Inventory, NormLayer
from normcheck.model.torch_checks import Captured, Names
from normcheck.model.torch_export import ATEN_OPS, aten_op_name, call_args, norm_calls
from normcheck.model.torch_modules import ROOT_PATH, _graph_args
from normcheck.names import OpName
from normcheck.ops import OpParams
from normcheck.ops.rms_norm import default_eps
from normcheck.problem import Problem
from normcheck.verify.records import CheckResult

FRAMEWORK = "torch"
# the arguments of an aten norm call that hold the layer's tensors, by role
TENSOR_ROLES = ("weight", "bias", "running_mean", "running_var")
GRAD_ROLES = {"weight": "grad_weight", "bias": "grad_bias"}
# native_group_norm's arguments that are sizes of its input: taken from the input each run
SIZE_ARGS = {"N": lambda s: s[0], "C": lambda s: s[1], "HxW": lambda s: int(np.prod(s[2:], dtype=np.int64))}
# the ops that return the updated running statistics (at these output positions) instead of
# updating them in place
FUNCTIONAL_RUNNING = {"_native_batch_norm_legit_functional": {"running_mean": 3, "running_var": 4}}
CUDA_ONLY = {"cudnn_batch_norm": "cuDNN's batch norm runs on CUDA only"}
CANDIDATE_REASON = (
    "a user layer in a torch.export program: its forward is decomposed into the graph's elementary ops, "
    "with no norm call to run; not probed"
)


def _np(t: torch.Tensor) -> np.ndarray:
    return torch_checks._np(t)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _save(folder: str, index: int, t: torch.Tensor) -> Captured:
    """``t`` to its own .npy file (bfloat16 as float32, which holds it exactly)."""
    file = os.path.join(folder, f"{index}.npy")
    t = t.detach().to("cpu")
    np.save(file, (t.float() if t.dtype == torch.bfloat16 else t).numpy())
    return Captured(file, _dtype(t))


# ---- torch.export: a layer is one aten norm call -----------------------------------------------


class NotStatic(Exception):
    """A call's tensor argument that depends on the model's input, not on its state alone."""


def _state(program: Any) -> dict[str, Any]:
    """The program's own tensors (parameters, buffers, constants) by placeholder name."""
    from torch.export.graph_signature import InputKind

    out: dict[str, Any] = {}
    for spec in program.graph_signature.input_specs:
        name = getattr(spec.arg, "name", None)
        if spec.kind == InputKind.USER_INPUT or name is None or spec.target is None:
            continue
        if spec.target in program.state_dict:
            out[name] = program.state_dict[spec.target]
        elif spec.target in program.constants:
            out[name] = program.constants[spec.target]
    return out


def _static_value(program: Any, node: Any, state: dict[str, Any], memo: dict[str, Any]) -> Any:
    """The value of a node computed from the program's state alone (a weight read, or repeated as
    an instance norm decomposed into a batch norm repeats it); NotStatic when it needs the input."""
    if node.name in memo:
        return memo[node.name]
    if node.op == "placeholder":
        if node.name not in state:
            raise NotStatic(node.name)
        value = state[node.name]
        value = value.detach().clone() if isinstance(value, torch.Tensor) else value
    elif node.op == "get_attr":
        value = program.graph_module
        for part in str(node.target).split("."):
            value = getattr(value, part)
    elif node.op == "call_function":

        def resolve(a: Any) -> Any:
            return _static_value(program, a, state, memo)

        args = torch.fx.node.map_arg(node.args, resolve)
        kwargs = torch.fx.node.map_arg(node.kwargs, resolve)
        with torch.no_grad():
            value = node.target(*args, **kwargs)
    else:
        raise NotStatic(node.name)
    memo[node.name] = value
    return value


@dataclass(frozen=True)
class AtenCall:
    """One aten norm call, ready to be called again: its op, and its arguments in schema order,
    the input marked INPUT, the layer's tensors as the program holds them."""

    target: Any
    op: OpName
    op_name: str
    arguments: tuple[tuple[str, bool, Any], ...]  # (schema name, keyword-only, value)

    def arg(self, name: str) -> Any:
        return next((v for n, _, v in self.arguments if n == name), None)


INPUT = object()  # the place of the layer's input among an AtenCall's arguments


def aten_call(program: Any, node: Any, seen: dict[str, Any] | None = None) -> AtenCall | str:
    """The node as a call to make again; why not, as a string. A tensor argument is read from the
    program's state (or computed from it alone); one computed from the model's input (an instance
    norm's weight repeated for each sample of a dynamic batch) is taken from ``seen``, the values
    the capture pass saw the node take, when given."""
    op_name = aten_op_name(node)
    if op_name is None:
        return "not an aten norm call"
    if op_name in CUDA_ONLY:
        return CUDA_ONLY[op_name]
    schema = node.target._schema
    args = call_args(node)
    first = schema.arguments[0].name
    if not isinstance(args.get(first), torch.fx.Node):
        return "its input is not a tensor of the graph"
    state = _state(program)
    memo: dict[str, Any] = {}
    arguments: list[tuple[str, bool, Any]] = []
    for a in schema.arguments:
        value = args.get(a.name)
        if a.name == first:
            value = INPUT
        elif a.name in SIZE_ARGS:
            value = None  # read from the input when the call is made
        elif isinstance(value, torch.fx.Node):
            try:
                value = _static_value(program, value, state, memo)
            except NotStatic:
                if seen is None or a.name not in seen:
                    return f"its {a.name} is computed from the model's input, not read from the program's state"
                value = seen[a.name]
            except Exception as e:
                return f"its {a.name} could not be computed from the program's state ({checks.describe_error(e)})"
        elif isinstance(value, (list, tuple)) and any(isinstance(v, torch.fx.Node) for v in value):
            if a.name != "normalized_shape":
                return f"its {a.name} is symbolic"
            value = None  # the input's trailing sizes
        arguments.append((a.name, bool(a.kwarg_only), value))
    return AtenCall(node.target, ATEN_OPS[op_name], op_name, tuple(arguments))


def _tensor(call: AtenCall, role: str) -> np.ndarray | None:
    t = call.arg(role)
    return _np(t) if isinstance(t, torch.Tensor) else None


def call_setup(call: AtenCall, dtype: str, ndim: int) -> LayerSetup | str:
    """What the call computes, from its own arguments; why it cannot be checked, as a string."""
    d = checks.dtype_name(dtype)
    if d is None:
        return f"activation dtype {dtype} is not one normcheck checks"
    op, name = call.op, call.op_name
    w, b = _tensor(call, "weight"), _tensor(call, "bias")
    affine = w is not None or b is not None
    eps = call.arg("eps")
    known = FUNCTIONAL_NAMES.get(op)  # PyTorch's own kernel: its documented defects are known
    if op in ("bn", "in"):
        rm, rv = _tensor(call, "running_mean"), _tensor(call, "running_var")
        running = rm is not None and rv is not None
        if name == "_native_batch_norm_legit_no_training":
            training = False
        elif op == "in":
            training = bool(call.arg("use_input_stats"))
        else:
            training = bool(call.arg("training"))
        if not training and not running:
            return "normalizes with running statistics it is not given"
        params = OpParams(mode="train" if training else "eval", running_stats=running, affine=affine)
        momentum = call.arg("momentum")
        return LayerSetup(
            op,
            params,
            float(eps),
            d,
            0.1 if momentum is None else float(momentum),
            w,
            b,
            rm if running else None,
            rv if running else None,
            known_impl=known,
        )
    if op == "gn":
        groups = call.arg("num_groups") if name == "group_norm" else call.arg("group")
        if not isinstance(groups, int):
            return "its group count is not a constant of the graph"
        return LayerSetup(op, OpParams(groups=groups, affine=affine), float(eps), d, 0.1, w, b, known_impl=known)
    shape = call.arg("normalized_shape")
    k = len(shape) if isinstance(shape, (list, tuple)) else (w.ndim if w is not None else None)
    if k is None or k > ndim:
        return "its normalized shape is not known"
    params = OpParams(normalized_ndim=k, affine=affine)
    eps_value = default_eps(d) if eps is None else float(eps)
    return LayerSetup(op, params, eps_value, d, 0.1, w, b, known_impl=known)


def run_call(call: AtenCall, problem: Problem) -> RunOutput:
    """The aten op itself on the problem: its output, the gradients of its input, weight and bias
    through autograd, and the running statistics after the call where it keeps them (copies of
    the program's: updated in place, or returned by the functional variant)."""
    x = torch_checks._torch(problem.x, problem.dtype).requires_grad_(True)
    shape = tuple(x.shape)
    grads: dict[str, torch.Tensor] = {}
    running: dict[str, torch.Tensor] = {}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, kw_only, value in call.arguments:
        if value is INPUT:
            value = x
        elif name in SIZE_ARGS:
            value = SIZE_ARGS[name](shape)
        elif name == "normalized_shape" and value is None:
            value = list(shape[len(shape) - (problem.params.normalized_ndim or 1) :])
        elif isinstance(value, torch.Tensor):
            value = value.detach().clone()
            if name in GRAD_ROLES and value.is_floating_point():
                value.requires_grad_(True)
                grads[name] = value
            elif name in ("running_mean", "running_var"):
                running[name] = value
        if kw_only:
            kwargs[name] = value
        else:
            args.append(value)
    with torch.enable_grad():
        result = call.target(*args, **kwargs)
        y = result[0] if isinstance(result, (tuple, list)) else result
        y.backward(torch_checks._torch(problem.dy, problem.dtype).to(y.dtype))
    out = RunOutput()
    out.add("forward", _np(y), _dtype(y))
    if x.grad is not None:
        out.add("grad_input", _np(x.grad), _dtype(x.grad))
    for role, check in GRAD_ROLES.items():
        g = grads[role].grad if role in grads else None
        if g is not None:
            out.add(check, _np(g), _dtype(g))
    if problem.params.running_stats:
        returned = FUNCTIONAL_RUNNING.get(call.op_name, {})
        for role in ("running_mean", "running_var"):
            t = result[returned[role]] if role in returned else running.get(role)
            if isinstance(t, torch.Tensor):
                out.add(role, _np(t), _dtype(t))
    return out


def export_runner(
    program: Any, node: Any, layer: NormLayer, x: np.ndarray, dtype: str, seen: dict[str, Any] | None = None
) -> checks.LayerRunner | str:
    call = aten_call(program, node, seen)
    if isinstance(call, str):
        return call
    setup = call_setup(call, dtype, x.ndim)
    if isinstance(setup, str):
        return setup
    return checks.LayerRunner(
        setup,
        lambda problem: run_call(call, problem),
        f"{layer.path} ({layer.kind})",
        FRAMEWORK,
        who="the aten op",
    )


class _Capture(torch.fx.Interpreter):
    """Runs the program's graph; writes the input of each wanted norm node as it reaches it."""

    def __init__(self, module: Any, wanted: dict[str, str], folder: str) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.wanted = wanted  # node name -> record path
        self.folder = folder
        self.found: dict[str, Captured] = {}
        self.seen: dict[str, dict[str, Any]] = {}  # record path -> the node's other tensor arguments
        self.last: list[str] = []

    def run_node(self, n: torch.fx.Node) -> Any:
        path = self.wanted.get(n.name)
        if path is not None:
            self.last.append(path)
            first = n.target._schema.arguments[0].name
            args = call_args(n)
            x = self.env.get(args[first]) if isinstance(args.get(first), torch.fx.Node) else None
            if isinstance(x, torch.Tensor) and x.is_floating_point() and path not in self.found:
                self.found[path] = _save(self.folder, len(self.found), x)
                self.seen[path] = {  # before the call: running statistics as it reads them
                    name: value.detach().clone()
                    for name, arg in args.items()
                    if name != first
                    and isinstance(arg, torch.fx.Node)
                    and isinstance(value := self.env.get(arg), torch.Tensor)
                }
        return super().run_node(n)


def _user_placeholders(program: Any) -> list[torch.fx.Node]:
    from torch.export.graph_signature import InputKind

    names = [
        getattr(s.arg, "name", None) for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT
    ]
    by_name = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    return [by_name[n] for n in names if n in by_name]


def program_inputs(
    program: Any, shapes: tuple[tuple[int, ...], ...], arrays: list[np.ndarray] | None, seed: int
) -> list[torch.Tensor]:
    """The program's user inputs: the arrays given, or seeded normal(0, 1) values of each shape in
    the dtype the program was exported with; UsageError for a count or a static size that differs."""
    holders = _user_placeholders(program)
    names = ", ".join(n.name for n in holders)
    given = len(arrays) if arrays is not None else len(shapes)
    if given != len(holders):
        raise UsageError(
            f"the program takes {len(holders)} input{'s' if len(holders) != 1 else ''} ({names}); "
            f"{given} given (one --input-shape each, or one array each in --input)"
        )
    rng = np.random.default_rng(seed)
    out = []
    for holder, k in zip(holders, range(given), strict=True):
        val = holder.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UsageError(f"the program's input {holder.name} is not a tensor: it cannot be given here")
        if arrays is not None:
            t = torch.from_numpy(np.ascontiguousarray(arrays[k]))
        else:
            t = torch.tensor(rng.standard_normal(shapes[k])).to(val.dtype)
        want = ["?" if not isinstance(n, int) else str(n) for n in val.shape]
        fixed = all(w == "?" or int(w) == s for w, s in zip(want, t.shape, strict=False))
        if len(want) != t.dim() or not fixed:
            raise UsageError(
                f"the program was exported for input {holder.name} of shape {'x'.join(want)} "
                f"(? is dynamic), not {'x'.join(map(str, t.shape))}"
            )
        out.append(t)
    return out


def _flat_inputs(program: Any, inputs: list[torch.Tensor]) -> list[Any]:
    """The graph's placeholders' values: the program's state (buffers copied) and the inputs."""
    from torch.export.graph_signature import InputKind

    user = iter(inputs)
    out: list[Any] = []
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            out.append(next(user))
            continue
        if spec.kind not in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            raise UsageError(f"the program takes a {spec.kind.name.lower()} input, which normcheck cannot give")
        value = program.state_dict.get(spec.target)
        if value is None:
            value = program.constants.get(spec.target)
        if spec.kind == InputKind.BUFFER and isinstance(value, torch.Tensor):
            value = value.detach().clone()  # the graph may update it in place (running statistics)
        out.append(value)
    return out


def capture_program(
    program: Any, wanted: dict[str, str], inputs: list[torch.Tensor], folder: str
) -> tuple[dict[str, Captured], dict[str, dict[str, Any]]]:
    """Run the program's graph once; each wanted node's input to its own .npy file, and the other
    tensors it was called with. UsageError when the model raises."""
    flat = _flat_inputs(program, inputs)
    interpreter = _Capture(program.graph_module, wanted, folder)
    try:
        with torch.no_grad():
            interpreter.run(*flat, enable_io_processing=False)
    except UsageError:
        raise
    except BaseException as e:
        raise torch_checks.model_raised(e, interpreter.last, inputs) from None
    return interpreter.found, interpreter.seen


def check_export(
    program: Any,
    inventory: Inventory,
    shapes: tuple[tuple[int, ...], ...],
    arrays: list[np.ndarray] | None,
    kinds: tuple[str, ...],
    seed: int,
    folder: str,
    send: Callable[[Any], None],
) -> None:
    """Capture, then send ("layer", rows) for each layer of the inventory, in its order."""
    nodes = norm_calls(program)
    wanted = {node.name: path for path, node in nodes.items()}
    inputs = program_inputs(program, shapes, arrays, seed)
    found, seen = capture_program(program, wanted, inputs, folder)

    def check(layer: NormLayer, x: np.ndarray, dtype: str) -> checks.LayerRunner | str:
        return export_runner(program, nodes[layer.path], layer, x, dtype, seen.get(layer.path))

    def missing(layer: NormLayer) -> str:
        return CANDIDATE_REASON if not layer.confirmed else "no aten norm call of the program has this path"

    _check_all(inventory, {p: p for p in nodes}, found, kinds, seed, check, missing, send)


# ---- TorchScript: a layer is a submodule ------------------------------------------------------

NAMESPACE = "normcheck_capture"
_LIBRARY: list[Any] = []  # the torch.library.Library defining the capture op, kept alive
_SESSION: list[Callable[[torch.Tensor, int], None]] = []  # the capture under way, if any


def _capture_impl(x: torch.Tensor, layer: int) -> None:
    if _SESSION:
        _SESSION[-1](x, layer)


def capture_op() -> str:
    """normcheck's own op ``normcheck_capture::save(Tensor x, int layer) -> ()``, registered once per
    process: a graph node that hands its input to the capture under way. Its alias analysis is
    CONSERVATIVE, so the graph executor keeps it although it returns nothing."""
    if not _LIBRARY:
        lib = torch.library.Library(NAMESPACE, "DEF")
        lib.define("save(Tensor x, int layer) -> ()", alias_analysis="CONSERVATIVE")
        lib.impl("save", _capture_impl, "CompositeExplicitAutograd")
        _LIBRARY.append(lib)
    return f"{NAMESPACE}::save"


def _call_methods(block: Any) -> Iterator[Any]:
    for node in block.nodes():
        if node.kind() == "prim::CallMethod":
            yield node
        for inner in node.blocks():
            yield from _call_methods(inner)


def _module_path(value: Any, self_id: int) -> str | None:
    """The path of the module a graph value holds: a chain of prim::GetAttr from ``self``."""
    names: list[str] = []
    while value.unique() != self_id:
        node = value.node()
        if node.kind() != "prim::GetAttr":
            return None
        names.append(node.s("name"))
        value = node.input()
    return ".".join(reversed(names))


def instrument(model: torch.jit.ScriptModule, wanted: dict[str, int]) -> Any:
    """A copy of the model's forward graph with every submodule's method inlined and a capture node
    before each call of a wanted module (module path -> layer number; "" is the model itself)."""
    op = capture_op()
    modules = dict(model.named_modules())
    graph = model.graph.copy()
    inputs = list(graph.inputs())
    self_id = inputs[0].unique()

    def capture(x: Any, layer: int, before: Any) -> None:
        if not isinstance(x.type(), torch._C.TensorType):
            return
        with graph.insert_point_guard(before):
            number = graph.insertConstant(layer)
            node = graph.create(op, [x, number], 0)
            node.insertBefore(before)

    if "" in wanted and len(inputs) > 1:
        first = next(iter(graph.nodes()), None)
        if first is not None:
            capture(inputs[1], wanted[""], first)
    while True:
        inlined = 0
        for call in list(_call_methods(graph.block())):
            path = _module_path(call.inputsAt(0), self_id)
            module = None if path is None else modules.get(path)
            if module is None:
                continue  # a module the graph does not reach by attribute: left as it is
            name = call.s("name")
            try:
                body = module._c._get_method(name).graph
            except Exception:
                continue
            if name == "forward" and path in wanted and path and call.inputsSize() > 1:
                capture(call.inputsAt(1), wanted[path], call)
            with graph.insert_point_guard(call):
                outputs = graph.insertGraph(body, list(call.inputs()))
            for old, new in zip(call.outputs(), outputs, strict=True):
                old.replaceAllUsesWith(new)
            call.destroy()
            inlined += 1
        if not inlined:
            break
    graph.lint()
    return graph


def capture_script(
    model: torch.jit.ScriptModule, paths: list[str], inputs: list[torch.Tensor], folder: str
) -> dict[str, Captured]:
    """Run the instrumented graph once on the model's own state; each layer's first input to its
    own .npy file, its calls counted. The model's buffers are restored after it. UsageError when
    the model raises."""
    numbers = {("" if p == ROOT_PATH else p): k for k, p in enumerate(paths)}
    try:
        graph = instrument(model, numbers)
        function = torch._C._create_function_from_graph("normcheck_capture_forward", graph)
    except Exception as e:
        raise UsageError(
            "normcheck could not prepare the TorchScript graph to capture its layers' inputs: "
            + checks.describe_error(e)
        ) from None
    found: dict[str, Captured] = {}
    last: list[str] = []

    def save(x: torch.Tensor, layer: int) -> None:
        path = paths[layer]
        last.append(path)
        if path in found:
            found[path] = replace(found[path], calls=found[path].calls + 1)
        elif x.is_floating_point():
            found[path] = _save(folder, len(found), x)

    saved = [(b, b.detach().clone()) for b in model.buffers()]
    _SESSION.append(save)
    try:
        with torch.no_grad(), torch.jit.optimized_execution(False):
            function(model._c, *inputs)
    except UsageError:
        raise
    except BaseException as e:
        raise torch_checks.model_raised(e, last, inputs) from None
    finally:
        _SESSION.remove(save)
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
    return found


# the attributes a scripted built-in keeps and torch_checks.builtin_setup reads; a traced one has none
SETTINGS: dict[str, tuple[str, ...]] = {
    "bn": ("eps", "momentum"),
    "in": ("eps", "momentum"),
    "gn": ("eps", "num_groups"),
    "ln": ("eps", "normalized_shape"),
    "rms": ("eps", "normalized_shape"),
}


def _names(module: torch.nn.Module) -> Names:
    found = {
        role: role if isinstance(getattr(module, role, None), torch.Tensor) else None
        for role in ("weight", "bias", "running_mean", "running_var")
    }
    return Names(**found)


def traced_setup(module: torch.nn.Module, record: NormLayer, dtype: str) -> LayerSetup | str:
    """A traced built-in's setup: its settings are the constants of its traced graph's norm call
    (the graph, not the module's attributes or train/eval flag, is what runs), its tensors its own."""
    d = checks.dtype_name(dtype)
    op = record.op
    if d is None or op is None:
        return f"activation dtype {dtype} is not one normcheck checks"
    graph = _graph_args(module)
    if not graph:
        return "its traced graph has no norm call to read its settings from"
    names = _names(module)
    w = _np(module.weight) if names.weight else None
    b = _np(module.bias) if names.bias else None
    params_of = dict(module.named_parameters(recurse=False))
    missing = {
        check: f"the layer's {role} is a buffer, not a parameter: it has no gradient"
        for role, check in GRAD_ROLES.items()
        if getattr(names, role) is not None and role not in params_of
    }
    affine = w is not None or b is not None
    eps = graph.get("eps")
    if op in ("bn", "in"):
        rm = _np(module.running_mean) if names.running_mean else None
        rv = _np(module.running_var) if names.running_var else None
        uses = graph.get("training") if op == "bn" else graph.get("use_input_stats")
        running = rm is not None and rv is not None
        if not isinstance(uses, bool) or not isinstance(eps, (int, float)):
            return "its traced graph does not hold its mode and eps as constants"
        if not uses and not running:
            return "normalizes with running statistics it is not given"
        momentum = graph.get("momentum")
        if momentum is None and record.momentum_weights == CUMULATIVE:
            return "momentum=None (a cumulative average) is not a constant of its traced graph"
        params = OpParams(mode="train" if uses else "eval", running_stats=running, affine=affine)
        return LayerSetup(
            op,
            params,
            float(eps),
            d,
            0.1 if momentum is None else float(momentum),
            w,
            b,
            rm if running else None,
            rv if running else None,
            True,
            missing,
        )
    if op == "gn":
        groups = graph.get("num_groups")
        if not isinstance(groups, int) or not isinstance(eps, (int, float)):
            return "its traced graph does not hold its groups and eps as constants"
        return LayerSetup(op, OpParams(groups=groups, affine=affine), float(eps), d, 0.1, w, b, missing=missing)
    shape = graph.get("normalized_shape")
    if not isinstance(shape, (list, tuple)) or not shape:
        return "its traced graph does not hold its normalized shape as a constant"
    if eps is None and op == "ln":
        return "its traced graph does not hold its eps as a constant"
    eps_value = default_eps(d) if eps is None else float(eps)
    return LayerSetup(op, OpParams(normalized_ndim=len(shape), affine=affine), eps_value, d, 0.1, w, b, missing=missing)


def script_runner(module: torch.nn.Module, layer: NormLayer, x: np.ndarray, dtype: str) -> checks.LayerRunner | str:
    """The model's own submodule ready to run: a scripted built-in or user layer as torch_checks
    runs an eager one (a user layer probed first); a traced built-in with the settings of its
    traced graph."""
    op = layer.op
    builtin = layer.confirmed and layer.basis == BUILT_IN and op is not None
    if builtin and op is not None and not all(hasattr(module, a) for a in SETTINGS[op]):
        setup = traced_setup(module, layer, dtype)
        if isinstance(setup, str):
            return setup
        names = _names(module)
        runner: checks.LayerRunner | str = checks.LayerRunner(
            setup,
            lambda problem: torch_checks.run_module(module, problem, names),
            f"{layer.path} ({layer.kind}; traced)",
            FRAMEWORK,
        )
    else:
        with torch.no_grad():  # a candidate's probe copies the module too
            runner = torch_checks.runner_for(module, layer, x, dtype)
    if isinstance(runner, str):
        return runner
    runner = replace(runner, run=_copied_as_leaves(runner.run))
    if not builtin or op is None:
        return runner
    # PyTorch's own layer: a failure one of its documented defects reproduces is known
    return replace(runner, setup=replace(runner.setup, known_impl=MODULE_NAMES[op]))


def _copied_as_leaves(run: Callable[[Problem], RunOutput]) -> Callable[[Problem], RunOutput]:
    """``run`` with grad mode off around it: copy.deepcopy of a ScriptModule (torch_checks.run_module
    copies the layer) clones its parameters under autograd, into tensors that are not leaves and
    never get a .grad; copied with grad mode off they are leaves. run_module turns grad mode on
    for the forward and backward itself."""

    def leaves(problem: Problem) -> RunOutput:
        with torch.no_grad():
            return run(problem)

    return leaves


def check_script(
    model: torch.jit.ScriptModule,
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
    if cast is not None:
        model = model.to(TORCH_DTYPES[cast])
    all_modules = dict(model.named_modules())
    modules = {
        layer.path: all_modules["" if layer.path == ROOT_PATH else layer.path]
        for layer in inventory.layers
        if ("" if layer.path == ROOT_PATH else layer.path) in all_modules
    }
    inputs = torch_checks.model_inputs(model, shapes, arrays, seed)
    found = capture_script(model, list(modules), inputs, folder)

    def check(layer: NormLayer, x: np.ndarray, dtype: str) -> checks.LayerRunner | str:
        return script_runner(modules[layer.path], layer, x, dtype)

    _check_all(inventory, modules, found, kinds, seed, check, lambda layer: "not a module of the model", send)


# ---- both ---------------------------------------------------------------------------------------


def runner_for(model: Any, layer: NormLayer, x: np.ndarray, dtype: str) -> checks.LayerRunner | str:
    """The layer at ``layer.path`` of ``model`` (an ExportedProgram: an aten norm call; a
    TorchScript module: a submodule) ready to run, given its input ``x`` as the layer receives it;
    why not, as a string."""
    if isinstance(model, torch.jit.ScriptModule):
        module = dict(model.named_modules()).get("" if layer.path == ROOT_PATH else layer.path)
        if module is None:
            return "not a module of the model"
        return script_runner(module, layer, x, dtype)
    if not layer.confirmed:
        return CANDIDATE_REASON
    node = norm_calls(model).get(layer.path)
    if node is None:
        return "no aten norm call of the program has this path"
    return export_runner(model, node, layer, x, dtype)


def capture_layers(
    model: Any,
    inventory: Inventory,
    shapes: tuple[tuple[int, ...], ...],
    arrays: list[np.ndarray] | None,
    seed: int,
    folder: str,
) -> dict[str, Captured]:
    """Each layer's input from one run of the model (a TorchScript module or a torch.export
    program), as the layer receives it, by record path: what runner_for takes as ``x``."""
    if isinstance(model, torch.jit.ScriptModule):
        names = dict(model.named_modules())
        paths = [layer.path for layer in inventory.layers if ("" if layer.path == ROOT_PATH else layer.path) in names]
        return capture_script(model, paths, torch_checks.model_inputs(model, shapes, arrays, seed), folder)
    wanted = {node.name: path for path, node in norm_calls(model).items()}
    return capture_program(model, wanted, program_inputs(model, shapes, arrays, seed), folder)[0]


def check_program(
    model: Any,
    inventory: Inventory,
    shapes: tuple[tuple[int, ...], ...],
    arrays: list[np.ndarray] | None,
    kinds: tuple[str, ...],
    seed: int,
    cast: str | None,
    folder: str,
    send: Callable[[Any], None],
) -> None:
    """check_script for a TorchScript module, check_export for a torch.export program."""
    if isinstance(model, torch.jit.ScriptModule):
        check_script(model, inventory, shapes, arrays, kinds, seed, cast, folder, send)
        return
    if cast is not None:
        raise UsageError("--dtype casts a PyTorch module; a torch.export program runs in the dtypes it was exported in")
    check_export(model, inventory, shapes, arrays, kinds, seed, folder, send)


def _check_all(
    inventory: Inventory,
    present: dict[str, Any],
    found: dict[str, Captured],
    kinds: tuple[str, ...],
    seed: int,
    runner: Callable[[NormLayer, np.ndarray, str], checks.LayerRunner | str],
    absent: Callable[[NormLayer], str],
    send: Callable[[Any], None],
) -> None:
    # one thread for the layers' own runs, as torch_checks does after its capture pass
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for layer in inventory.layers:
            rows = _layer_rows(layer, layer.path in present, found.get(layer.path), kinds, seed, runner, absent)
            cap = found.get(layer.path)
            if cap is not None:
                os.unlink(cap.file)  # each activation leaves the disk once its layer is checked
            send(("layer", rows))
    finally:
        torch.set_num_threads(threads)


def _layer_rows(
    layer: NormLayer,
    present: bool,
    captured: Captured | None,
    kinds: tuple[str, ...],
    seed: int,
    runner_of: Callable[[NormLayer, np.ndarray, str], checks.LayerRunner | str],
    absent: Callable[[NormLayer], str],
) -> list[CheckResult]:
    label = f"{layer.path} ({layer.kind})"
    if not present:
        return [checks.layer_row(label, FRAMEWORK, "skip", absent(layer), layer.op, layer.dtype)]
    if captured is None:
        why = "not called by the model's forward on this input"
        return [checks.layer_row(label, FRAMEWORK, "skip", why, layer.op, layer.dtype)]
    x = np.load(captured.file).astype(np.float64)
    try:
        runner = runner_of(layer, x, captured.dtype)
    except Exception as e:  # the user's layer raised while being probed or read
        message = f"the layer could not be prepared: {checks.describe_error(e)}"
        return [checks.layer_row(label, FRAMEWORK, "error", message, layer.op, captured.dtype)]
    if isinstance(runner, str):
        return [checks.layer_row(label, FRAMEWORK, "skip", runner, layer.op, captured.dtype)]
    return runner.rows(x, kinds, seed, layer.path, captured.calls)
