"""PyTorch reproducers: the code that runs one case as the adapter does (adapter.py's
TorchImplementation, and forms.py, quantized.py and ws.py for user code), as text. Imports no torch.

The case's steps run under ``torch.no_grad()`` in training mode, then ``x`` forward (in training
mode, or evaluation with running statistics) and backward with ``dy``; ``x``, the steps and ``dy``
in the case's memory format, the weight, bias and running statistics contiguous. Beyond the five
ops (``COVERS``):

- the variants: ``nn.LayerNorm(bias=False)`` and ``F.layer_norm(bias=None)`` (nobias),
  ``nn.BatchNormNd(momentum=None)`` (cumulative); user code computes gemma, nobias and paper itself;
- layer norm over other axes than the trailing ones: permuted around ``F.layer_norm`` and
  ``nn.LayerNorm`` (a user module is given x as it is and permutes itself);
- a fused add + norm (user code): ``fn(x, residual, weight, [bias,] eps)`` or
  ``m(x, residual)``, backward with dy and dresidual, the upstream gradients of both outputs;
- FP8-quantized output (user code): called under ``torch.no_grad()``, returning (q, scale);
- adaLN: DiT's composition over ``F.layer_norm``, or user code bound by its parameters' names as
  normcheck binds it (normcheck.user.modulation, written out in the script);
- Weight Standardization: timm's ``StdConv2d`` composition (``F.batch_norm`` over the weight, then
  ``F.conv2d``), or user code given padding and eps by the names it takes them (``takes``);
  ``ws_gn`` followed by ``F.group_norm``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from normcheck.frameworks.torch.facts import ADALN_NAME, FUNCTIONAL_NAMES, MODULE_NAMES, TORCH, WS_NAMES
from normcheck.names import CHANNELS_LAST, STRESS_LAYOUTS
from normcheck.ops import FUSED_BASE
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.batch_norm import CUMULATIVE
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.ops.quantize import QUANTIZED, QUANTIZED_CHECK, SCALE_CHECK, STATIC
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.rms_norm import default_eps as rms_default_eps
from normcheck.ops.weight_standardization import GN_EPS, PAPER, WEIGHT_STANDARDIZATION, WS_GN, WS_OPS, conv_of
from normcheck.repro.bindings import OPTIONS, modulation_text
from normcheck.repro.call import QUANTIZED_DTYPE, ReproCall, Snippet, block, quoted
from normcheck.user.modulation import MODULATION_ROLES
from normcheck.user.ws_forms import EPS_NAMES, PADDING_NAMES

# What these reproducers write beyond the five plain ops (repro.call.extensions)
COVERS = frozenset({GEMMA, NOBIAS, CUMULATIVE, PAPER, FUSED_ADD, AXES, QUANTIZED, ADALN, WEIGHT_STANDARDIZATION})
MEMORY_FORMATS = {4: "torch.channels_last", 5: "torch.channels_last_3d"}
DTYPES = {name: f"torch.{name}" for name in ("float64", "float32", "float16", "bfloat16")}
FUNCTIONAL_IMPORT, MODULE_IMPORT = "import torch.nn.functional as F", "from torch import nn"
INSPECT_IMPORT = "import inspect"
# (parameter, the names a user's module may give it): forms.py's _set_parameter
PARAMETER_NAMES = {"weight": ("weight", "gamma"), "bias": ("bias", "beta")}

HELPERS = '''\
DTYPE = {dtype}
DEVICE = {device}


def tensor(a, layout=False):
    """A copy of a float64 array in the case's dtype{layout_doc}."""
    t = torch.tensor(np.asarray(a, dtype=np.float64)).to(device=DEVICE, dtype=DTYPE)
    return {layout_expr}


def numpy(outputs):
    """Each output as float64 NumPy (an output that is None is left out)."""
    return {{k: v.detach().to("cpu", torch.float64).numpy() for k, v in outputs.items() if v is not None}}
'''

SET_PARAMETER = '''

def set_parameter(m, names, value):
    """The module's parameter under the first of ``names``, set to ``value``."""
    for name in names:
        t = getattr(m, name, None)
        if isinstance(t, torch.Tensor):
            with torch.no_grad():
                t.copy_(tensor(value).reshape(t.shape))
            return t
    raise AttributeError(f"{type(m).__name__} has no parameter {' or '.join(names)}")


def grad(t, value):
    """The gradient of ``t`` in the shape of the case's ``value`` (a weight kept as (1, C, 1, 1) has
    its gradient in that shape)."""
    g = t.grad
    return g.reshape(np.shape(value)) if g is not None and g.numel() == np.size(value) else g
'''


# normcheck.frameworks.torch.quantized.outputs
QUANTIZED_OUTPUTS = '''

def quantized(result, static):
    """What FP8 code returned, as normcheck reads it: (q, scale), or q alone where the scale was
    given (``static``); q's values as float64 and the dtype it came in, and the scale."""
    if isinstance(result, torch.Tensor) and static:
        q, scale = result, None
    else:
        q, scale = result
    out = {{{q_key}: q.detach().to("cpu", torch.float64).numpy(), {dtype_key}: str(q.dtype).removeprefix("torch.")}}
    if isinstance(scale, torch.Tensor):
        out[{scale_key}] = scale.detach().to("cpu", torch.float64).numpy()
    elif scale is not None:
        out[{scale_key}] = np.asarray(float(scale))
    return out
'''


# Each option: (value for the case, the framework's default); left out when they agree and the
# call leaves defaults out (forms.py's OptionValues)
Options = dict[str, tuple[object, object]]
# The lines of one forward call: (call, the expression of x, training, the name of the output)
Forward = Callable[[ReproCall, str, bool, str], list[str]]
# (imports beyond torch, helper texts, the lines of run(data))
Made = tuple[tuple[str, ...], tuple[str, ...], list[str]]


@dataclass(frozen=True)
class Leaf:
    """A tensor whose gradient is a check: its variable in the script and its array in the .npz."""

    check: str
    name: str
    key: str
    module: bool = False  # a user module's parameter: its gradient read in the case's shape (grad())

    @property
    def grad(self) -> str:
        return f'grad({self.name}, data["{self.key}"])' if self.module else f"{self.name}.grad"


def snippet(call: ReproCall) -> Snippet | str:
    """The script's PyTorch part for ``call``, or why there is none."""
    if call.layout in STRESS_LAYOUTS:
        return f"reproducers cover contiguous and channels_last input, not yet the stress profile's {call.layout}"
    if call.user is None:
        made = _built_in(call)
    elif call.user.form == "torch_function":
        made = _user_function(call)
    elif call.user.form == "torch_module":
        made = _user_module(call)
    else:
        return f"the torch reproducers have no form {call.user.form!r}"
    if isinstance(made, str):
        return made
    imports, helpers, lines = made
    if call.op in WS_OPS and call.device.startswith("cuda"):  # adapter.ieee_float32_convolutions
        lines = ['torch.backends.cudnn.conv.fp32_precision = "ieee"  # float32 convolutions in float32', *lines]
    code = _helpers(call) + "".join(helpers) + "\n\ndef run(data):\n" + block(lines)
    return Snippet(("import torch", *imports), code, 'f"torch {torch.__version__}"', ("torch",))


def _built_in(call: ReproCall) -> Made | str:
    """adapter.py's implementations: F.*, nn.*, DiT's adaLN and timm's StdConv2d."""
    if call.op in WS_OPS and call.impl == WS_NAMES[call.op]:
        return (FUNCTIONAL_IMPORT,), (), _ws_setup(call) + _body(call, _timm_ws)
    if call.op == ADALN and call.impl == ADALN_NAME:
        return (FUNCTIONAL_IMPORT,), (), _adaln_setup(call) + _body(call, _dit_adaln)
    if call.impl == FUNCTIONAL_NAMES.get(call.op):
        return (FUNCTIONAL_IMPORT,), (), _functional_setup(call) + _body(call, _functional_call)
    if call.impl == MODULE_NAMES.get(call.op):
        return (MODULE_IMPORT,), (), _layer_setup(call) + _body(call, _layer_forward)
    return f"PyTorch has no implementation named {call.impl!r}"


def _user_function(call: ReproCall) -> Made:
    """forms.function_binder (and ModulationFunction, ws._function_binder)."""
    if call.op in WS_OPS:
        imports = (INSPECT_IMPORT, *((FUNCTIONAL_IMPORT,) if call.op == WS_GN else ()))
        return imports, (OPTIONS,), _ws_setup(call) + _body(call, _user_ws_function)
    if call.op == ADALN:
        return (INSPECT_IMPORT,), (modulation_text(),), _adaln_setup(call) + _body(call, _user_adaln_function)
    if call.op in FUSED_BASE:
        return (), (), _functional_setup(call) + _fused_body(call, _fused_call(call))
    if call.params.quant is not None:
        return (), (_quantized_outputs(),), _functional_setup(call) + _quantized_body(call, _quantized_call(call))
    return (), (), _functional_setup(call) + _body(call, _user_function_call)


def _user_module(call: ReproCall) -> Made:
    """forms.ModuleImplementation (and ws._module_binder)."""
    if call.op in WS_OPS:
        imports = (INSPECT_IMPORT, *((FUNCTIONAL_IMPORT,) if call.op == WS_GN else ()))
        return imports, (SET_PARAMETER, OPTIONS), _ws_module_setup(call) + _body(call, _user_ws_module)
    if call.op == ADALN:
        helpers = (OPTIONS, modulation_text())
        return (INSPECT_IMPORT,), helpers, _adaln_module_setup(call) + _body(call, _user_adaln_module)
    setup = _user_module_setup(call)
    if call.op in FUSED_BASE:  # vLLM's RMSNorm.forward(x, residual) -> (out, residual)
        return (), (SET_PARAMETER,), setup + _fused_body(call, "m.train(True)(x, residual)")
    if call.params.quant is not None:  # quantized.module_call: in evaluation mode, m(x) or m(x, scale)
        expr = "m(x)" if not _static(call) else "m(x, scale)"
        return (), (SET_PARAMETER, _quantized_outputs()), [*setup, "m.eval()", *_quantized_body(call, expr)]
    return (), (SET_PARAMETER,), setup + _body(call, _module_forward)


def _helpers(call: ReproCall) -> str:
    channels_last = call.layout == CHANNELS_LAST
    text = HELPERS.format(
        dtype=DTYPES[call.dtype],
        device=quoted(call.device),
        layout_doc=", in the channels-last memory format when ``layout``" if channels_last else "",
        layout_expr=(
            f"t.contiguous(memory_format={MEMORY_FORMATS[len(call.shape)]}) if layout else t" if channels_last else "t"
        ),
    )
    if call.params.weight_dtype is not None and call.params.affine:  # a precision policy's float32 weight
        device = f"DEVICE = {quoted(call.device)}\n"
        weight = f"WEIGHT_DTYPE = {DTYPES[call.params.weight_dtype]}  # the weight is stored in this dtype\n"
        text = text.replace(device, device + weight, 1)
    return text


def _quantized_outputs() -> str:
    return QUANTIZED_OUTPUTS.format(
        q_key=quoted(QUANTIZED_CHECK), dtype_key=quoted(QUANTIZED_DTYPE), scale_key=quoted(SCALE_CHECK)
    )


def _leaves(call: ReproCall) -> list[Leaf]:
    """The tensors whose gradients are checks (beside x's): weight and bias (adaLN's scale and
    shift), and ws_gn's group norm affine."""
    if call.op == ADALN:
        return [Leaf("grad_weight", "scale", "weight"), Leaf("grad_bias", "shift", "bias")]
    module = call.user is not None and call.user.form == "torch_module" and call.op not in WS_OPS
    leaves = [Leaf("grad_weight", "weight", "weight", module)] if call.has_weight else []
    leaves += [Leaf("grad_bias", "bias", "bias", module)] if call.has_bias else []
    if call.op == WS_GN and call.params.affine:
        leaves += [Leaf("grad_gn_weight", "gn_weight", "gn_weight"), Leaf("grad_gn_bias", "gn_bias", "gn_bias")]
    return leaves


def _body(call: ReproCall, forward: Forward) -> list[str]:
    """The adapter's run: steps under no_grad, x forward and backward, the outputs."""
    lines = []
    if call.params.running_stats:
        lines += ["with torch.no_grad():", '    for batch in data["steps"]:']
        lines += [f"        {line}" for line in forward(call, "tensor(batch, layout=True)", True, "_")]
    lines.append('x = tensor(data["x"], layout=True).requires_grad_(True)')
    lines += forward(call, "x", call.training, "y")
    lines.append('y.backward(tensor(data["dy"], layout=True))')
    outputs = ['"forward": y', '"grad_input": x.grad', *(f'"{leaf.check}": {leaf.grad}' for leaf in _leaves(call))]
    if call.params.running_stats:
        outputs += ['"running_mean": running_mean', '"running_var": running_var']
    lines.append("return numpy({" + ", ".join(outputs) + "})")
    return lines


def _fused_body(call: ReproCall, expr: str) -> list[str]:
    """adapter._run_fused: x and residual forward, (output, residual_out) backward with dy and
    dresidual (for each output that requires grad)."""
    outputs = ['"forward": y', '"residual_out": h', '"grad_input": x.grad', '"grad_residual": residual.grad']
    outputs += [f'"{leaf.check}": {leaf.grad}' for leaf in _leaves(call)]
    return [
        'x = tensor(data["x"], layout=True).requires_grad_(True)',
        'residual = tensor(data["residual"], layout=True).requires_grad_(True)',
        f"y, h = {expr}",
        'upstream = (tensor(data["dy"], layout=True), tensor(data["dresidual"], layout=True))',
        "backward = [(t, g) for t, g in zip((y, h), upstream) if t.requires_grad]",
        "torch.autograd.backward([t for t, _ in backward], [g for _, g in backward])",
        "return numpy({" + ", ".join(outputs) + "})",
    ]


def _quantized_body(call: ReproCall, expr: str) -> list[str]:
    """adapter._run of a quantized case: inference, x in the case's layout, (q, scale) read as
    quantized.outputs reads them."""
    lines = []
    if _static(call):  # quantized.static_scale
        lines.append('scale = torch.tensor(float(data["quant_scale"]), dtype=torch.float32, device=DEVICE)')
    return [
        *lines,
        "with torch.no_grad():",
        '    x = tensor(data["x"], layout=True)',
        f"    result = {expr}",
        f"return quantized(result, static={_static(call)})",
    ]


def _static(call: ReproCall) -> bool:
    """Whether the FP8 case gives the code its scale."""
    return call.params.quant is not None and call.params.quant.scale == STATIC


# -- torch.nn.functional and functions with its signature ------------------------------------


def _weight(call: ReproCall) -> str:
    """The weight leaf, in a precision policy's float32 where the case keeps it there (adapter.weight_dtype)."""
    stored = ".to(WEIGHT_DTYPE)" if call.params.weight_dtype is not None else ""
    return f'weight = tensor(data["weight"]){stored}.requires_grad_(True)'


def _functional_setup(call: ReproCall) -> list[str]:
    """Weight and bias as leaves that collect their gradients, running statistics to update in place."""
    lines = []
    if call.params.affine:
        lines.append(_weight(call))
    if call.has_bias:
        lines.append('bias = tensor(data["bias"]).requires_grad_(True)')
    if call.params.running_stats:
        lines += ['running_mean = tensor(data["running_mean"])', 'running_var = tensor(data["running_var"])']
    return lines


def _tensors(call: ReproCall) -> tuple[str, str, str, str]:
    """The names of weight, bias, running mean and running variance in the script (None: absent)."""
    running = call.params.running_stats
    return (
        "weight" if call.params.affine else "None",
        "bias" if call.has_bias else "None",
        "running_mean" if running else "None",
        "running_var" if running else "None",
    )


def _rms_eps(call: ReproCall) -> float | None:
    """None (PyTorch's own default) whenever the case uses that default."""
    return None if call.eps == rms_default_eps(call.dtype) else call.eps


def _permutation(call: ReproCall) -> tuple[str, str]:
    """adapter.around_axes: (the permutation putting the normalized axes last, the one back), as
    argument lists."""
    axes = call.params.axes or ()
    perm = [a for a in range(len(call.shape)) if a not in axes] + list(axes)
    back = [perm.index(a) for a in range(len(call.shape))]
    return ", ".join(map(str, perm)), ", ".join(map(str, back))


def _functional_call(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    w, b, rm, rv = _tensors(call)
    p, eps = call.params, call.eps
    if call.op == "ln" and p.axes is not None:  # no F.layer_norm over other axes: permuted around it
        perm, back = _permutation(call)
        sizes = list(call.param_shape)
        return [f"{out} = F.layer_norm({x}.permute({perm}), {sizes!r}, {w}, {b}, eps={eps!r}).permute({back})"]
    text = {
        "bn": f"F.batch_norm({x}, {rm}, {rv}, {w}, {b}, training={train}, momentum={call.momentum!r}, eps={eps!r})",
        "in": (
            f"F.instance_norm({x}, {rm}, {rv}, {w}, {b}, use_input_stats={train}, "
            f"momentum={call.momentum!r}, eps={eps!r})"
        ),
        "ln": f"F.layer_norm({x}, {x}.shape[{x}.ndim - {p.normalized_ndim}:], {w}, {b}, eps={eps!r})",
        "gn": f"F.group_norm({x}, {p.groups}, {w}, {b}, eps={eps!r})",
        "rms": f"F.rms_norm({x}, {x}.shape[{x}.ndim - {p.normalized_ndim}:], {w}, eps={_rms_eps(call)!r})",
    }[call.op]
    return [f"{out} = {text}"]


def _keywords(options: Options, omit_defaults: bool) -> list[str]:
    """``name=value`` for each option, leaving out those at their default when defaults are omitted."""
    return [f"{k}={v!r}" for k, (v, default) in options.items() if not (omit_defaults and v == default)]


def _default_eps(call: ReproCall) -> float:
    """The eps PyTorch's op (a fused op's norm's) takes when given none."""
    return TORCH[FUSED_BASE.get(call.op, call.op)].default_eps(call.dtype)


def _user_function_call(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    """forms.function_call: the tensors positionally (trailing None ones dropped when defaults are
    left out), the options by keyword."""
    w, b, rm, rv = _tensors(call)
    omit = call.user is not None and call.user.omit_defaults
    conv = TORCH[call.op]
    eps: Options = {"eps": (call.eps, conv.default_eps(call.dtype))}
    momentum: Options = {"momentum": (call.momentum, conv.default_new_weight)}
    options: Options
    if call.op == "bn":
        args, n_required = [x, rm, rv, w, b], 3
        options = {"training": (train, False), **momentum, **eps}
    elif call.op == "in":
        args, n_required = [x, rm, rv, w, b], 1
        options = {"use_input_stats": (train, True), **momentum, **eps}
    elif call.op == "gn":
        args, n_required, options = [x, repr(call.params.groups), w, b], 2, eps
    elif call.op == "ln":
        args, n_required, options = [x, repr(call.param_shape), w, b], 2, eps
    else:
        args, n_required, options = [x, repr(call.param_shape), w], 2, eps
    if omit:
        while len(args) > n_required and args[-1] == "None":
            args.pop()
    return [f"{out} = IMPL({', '.join(args + _keywords(options, omit))})"]


def _fused_call(call: ReproCall) -> str:
    """forms.fused_call: all positional, eps always given; ones for a case without a weight."""
    w, b, _, _ = _tensors(call)
    if w == "None":
        w = f"torch.ones({call.param_shape!r}, dtype=x.dtype, device=x.device)"
    args = ["x", "residual", w] + ([b] if call.op == "add_ln" else []) + [repr(call.eps)]
    return f"IMPL({', '.join(args)})"


def _quantized_call(call: ReproCall) -> str:
    """quantized_result.quantized_arguments: input, normalized_shape, weight[, bias], eps[, scale], all positional."""
    w, b, _, _ = _tensors(call)
    args = ["x", repr(call.normalized_shape), w] + ([b] if call.op == "ln" else []) + [repr(call.eps)]
    return f"IMPL({', '.join(args + (['scale'] if _static(call) else []))})"


# -- torch.nn layers and classes with their constructors -----------------------------------


def _module_dtype(call: ReproCall) -> str:
    """The dtype a module is moved to: its weight's (adapter.weight_dtype)."""
    return "WEIGHT_DTYPE" if call.params.weight_dtype is not None and call.params.affine else "DTYPE"


def _layer_setup(call: ReproCall) -> list[str]:
    """adapter._layer and bind_module: the torch.nn layer, its weight and bias set to the case's."""
    p = call.params
    c = call.shape[1] if len(call.shape) > 1 else None
    nd = {2: 1, 3: 1, 4: 2, 5: 3}.get(len(call.shape))
    if call.op == "bn":
        momentum = None if p.variant == CUMULATIVE else call.momentum  # None: the cumulative average
        ctor = f"nn.BatchNorm{nd}d({c}, eps={call.eps!r}, momentum={momentum!r}, affine={p.affine}, "
        ctor += "track_running_stats=True)"
    elif call.op == "in":
        ctor = f"nn.InstanceNorm{nd}d({c}, eps={call.eps!r}, momentum={call.momentum!r}, affine={p.affine}, "
        ctor += f"track_running_stats={p.running_stats})"
    elif call.op == "gn":
        ctor = f"nn.GroupNorm({p.groups}, {c}, eps={call.eps!r}, affine={p.affine})"
    elif call.op == "ln":
        nobias = ", bias=False" if p.variant == NOBIAS else ""
        ctor = f"nn.LayerNorm({call.param_shape!r}, eps={call.eps!r}, elementwise_affine={p.affine}{nobias})"
    else:
        ctor = f"nn.RMSNorm({call.param_shape!r}, eps={_rms_eps(call)!r}, elementwise_affine={p.affine})"
    lines = [f"m = {ctor}.to(device=DEVICE, dtype={_module_dtype(call)})"]
    w, b, rm, rv = _tensors(call)
    copies = [f'    m.{name}.copy_(tensor(data["{name}"]))' for name in (w, b, rm, rv) if name != "None"]
    if copies:  # the case's weight, bias and initial running statistics
        lines += ["with torch.no_grad():", *copies]
    if call.params.affine:
        lines.append(f"{w}, {b} = m.weight, m.bias" if b != "None" else f"{w} = m.weight")
    return lines


def _layer_forward(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    """bind_module's forward: over other axes than the trailing ones, permuted around the layer."""
    if call.params.axes is None:
        return _module_forward(call, x, train, out)
    perm, back = _permutation(call)
    return [f"{out} = m.train({train})({x}.permute({perm})).permute({back})"]


def _user_module_setup(call: ReproCall) -> list[str]:
    """forms.constructor_call and ModuleImplementation: the user's class constructed like the
    torch.nn layer, its parameters set to the case's."""
    p = call.params
    omit = call.user is not None and call.user.omit_defaults
    conv = TORCH[FUSED_BASE.get(call.op, call.op)]
    channels = call.shape[1] if len(call.shape) > 1 else None
    eps: Options = {"eps": (call.eps, _default_eps(call))}
    momentum: Options = {"momentum": (call.momentum, conv.default_new_weight)}
    options: Options
    if call.op == "gn":
        args, options = [repr(p.groups), repr(channels)], {**eps, "affine": (p.affine, True)}
    elif call.op == "bn":
        args = [repr(channels)]
        if p.variant == CUMULATIVE:  # momentum=None: the cumulative moving average
            momentum = {"momentum": (None, conv.default_new_weight)}
        options = {**eps, **momentum, "affine": (p.affine, True), "track_running_stats": (True, True)}
    elif call.op == "in":
        args = [repr(channels)]
        options = {
            **eps,
            **momentum,
            "affine": (p.affine, False),
            "track_running_stats": (p.running_stats, False),
        }
    else:  # ln, rms, and the fused add_ln, add_rms
        args, options = [repr(call.param_shape)], {**eps, "elementwise_affine": (p.affine, True)}
        if p.variant == NOBIAS:  # nn.LayerNorm(bias=False)
            options["bias"] = (False, True)
    ctor = f"IMPL({', '.join(args + _keywords(options, omit))})"
    lines = [f"m = {ctor}.to(device=DEVICE, dtype={_module_dtype(call)})"]
    w, b, _, _ = _tensors(call)
    for name in (w, b):
        if name != "None":
            lines.append(f'{name} = set_parameter(m, {PARAMETER_NAMES[name]!r}, data["{name}"])')
    return lines


def _module_forward(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    lines = [f"{out} = m.train({train})({x})"]
    if call.params.running_stats:  # read after every call: a module may assign new tensors
        lines.append("running_mean, running_var = m.running_mean, m.running_var")
    return lines


# -- adaLN: DiT's composition, and user code bound by its parameters' names ------------------


def _adaln_setup(call: ReproCall) -> list[str]:
    """adaLN's scale (the case's weight) and shift (its bias), (N, D) leaves."""
    return [
        'scale = tensor(data["weight"]).requires_grad_(True)  # adaLN scale: the case weight',
        'shift = tensor(data["bias"]).requires_grad_(True)  # adaLN shift: the case bias',
    ]


def _dit_adaln(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    """adapter.bind_adaln: modulate(F.layer_norm(x), shift, scale), DiT's modulate."""
    norm = f"F.layer_norm({x}, ({call.shape[-1]},), eps={call.eps!r})"
    return [f"{out} = {norm} * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)"]


def _user_adaln_function(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    """forms.ModulationFunction: eps always given where the function takes one."""
    return [f"{out} = modulate(IMPL, modulation(IMPL), {x}, shift, scale, {call.eps!r})"]


def _adaln_module_setup(call: ReproCall) -> list[str]:
    """forms.ModuleImplementation._bind_modulation: ``cls(D, eps=...)`` (eps left out in the
    defaults call style), its own (D,) weight and bias given normcheck's stray values."""
    omit = call.user is not None and call.user.omit_defaults
    width = call.shape[-1]
    given = "" if omit else f", **options(IMPL, ({MODULATION_ROLES['eps']!r}, {call.eps!r}))"
    return [
        f"m = IMPL({width}{given}).to(device=DEVICE, dtype=DTYPE)",
        "with torch.no_grad():  # a (D,) weight and bias of its own, which adaLN's norm has none of",
        "    for name, param in m.named_parameters():",
        '        kind = name.rpartition(".")[2]',
        f'        if kind in ("weight", "bias") and tuple(param.shape) == ({width},):',
        '            param.copy_(tensor(data["stray_" + kind]))',
        *_adaln_setup(call),
    ]


def _user_adaln_module(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    """Called as ``forward(x, shift, scale)`` bound by its names, its own eps."""
    return [f"{out} = modulate(m.train(True), modulation(m.forward), {x}, shift, scale, None)"]


# -- Weight Standardization: timm's StdConv2d, and user code (frameworks.torch.ws) ------------


def _ws_setup(call: ReproCall) -> list[str]:
    """The convolution's weight (and bias), and ws_gn's group norm affine, as leaves."""
    lines = ['weight = tensor(data["weight"]).requires_grad_(True)']
    if call.has_bias:
        lines.append('bias = tensor(data["bias"]).requires_grad_(True)')
    return lines + _gn_leaves(call)


def _gn_leaves(call: ReproCall) -> list[str]:
    if call.op != WS_GN or not call.params.affine:
        return []
    return [f'{name} = tensor(data["{name}"]).requires_grad_(True)' for name in ("gn_weight", "gn_bias")]


def _group_norm(call: ReproCall, out: str) -> list[str]:
    """adapter.ws_group_norm: ws_gn's F.group_norm after the convolution."""
    if call.op != WS_GN:
        return []
    gw, gb = ("gn_weight", "gn_bias") if call.params.affine else ("None", "None")
    return [f"{out} = F.group_norm({out}, {call.params.groups}, {gw}, {gb}, eps={GN_EPS!r})"]


def _timm_ws(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    """adapter.bind_ws: timm's StdConv2d, F.batch_norm over the weight viewed as (1, O, I*kh*kw)."""
    o, _, padding = conv_of(call.params)
    b = "bias" if call.has_bias else "None"
    return [
        f"what = F.batch_norm(weight.reshape(1, {o}, -1), None, None, training=True, momentum=0.0, eps={call.eps!r})",
        f"{out} = F.conv2d({x}, what.reshape_as(weight), {b}, padding={padding})",
        *_group_norm(call, out),
    ]


def _user_ws_function(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    """ws._function_binder: fn(x, weight, bias, padding=, eps=) by the names it takes them."""
    padding = conv_of(call.params)[2]
    given = [f"({PADDING_NAMES!r}, {padding})"]
    if call.user is not None and not call.user.omit_defaults:
        given.append(f"({EPS_NAMES!r}, {call.eps!r})")
    b = "bias" if call.has_bias else "None"
    return [f"{out} = IMPL({x}, weight, {b}, **options(IMPL, {', '.join(given)}))", *_group_norm(call, out)]


def _ws_module_setup(call: ReproCall) -> list[str]:
    """ws._module_binder: ``cls(in_channels, out_channels, kernel_size, padding=p, bias=...,
    eps=...)`` (eps where it takes one, and not in the defaults call style), its weight and bias
    set to the case's."""
    o, k, padding = conv_of(call.params)
    omit = call.user is not None and call.user.omit_defaults
    given = "" if omit else f", **options(IMPL, ({EPS_NAMES!r}, {call.eps!r}))"
    ctor = f"IMPL({call.shape[1]}, {o}, {k}, padding={padding}, bias={call.has_bias}{given})"
    lines = [f"m = {ctor}.to(device=DEVICE, dtype=DTYPE)", 'weight = set_parameter(m, ("weight",), data["weight"])']
    if call.has_bias:
        lines.append('bias = set_parameter(m, ("bias",), data["bias"])')
    return lines + _gn_leaves(call)


def _user_ws_module(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    return [f"{out} = m.train({train})({x})", *_group_norm(call, out)]
