"""PyTorch reproducers: the code that runs one case as the adapter does (adapter.py's
TorchImplementation, and forms.py for user code), as text. Imports no torch.

The case's steps run under ``torch.no_grad()`` in training mode, then ``x`` forward (in training
mode, or evaluation with running statistics) and backward with ``dy``; ``x``, the steps and ``dy``
in the case's memory format, the weight, bias and running statistics contiguous.
"""

from __future__ import annotations

from collections.abc import Callable

from normcheck.frameworks.torch.facts import FUNCTIONAL_NAMES, MODULE_NAMES, TORCH
from normcheck.names import CHANNELS_LAST, STRESS_LAYOUTS
from normcheck.ops.rms_norm import default_eps as rms_default_eps
from normcheck.repro.call import ReproCall, Snippet, block, quoted

MEMORY_FORMATS = {4: "torch.channels_last", 5: "torch.channels_last_3d"}
DTYPES = {name: f"torch.{name}" for name in ("float64", "float32", "float16", "bfloat16")}
FUNCTIONAL_IMPORT, MODULE_IMPORT = "import torch.nn.functional as F", "from torch import nn"
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


# Each option: (value for the case, the framework's default); left out when they agree and the
# call leaves defaults out (forms.py's OptionValues)
Options = dict[str, tuple[object, object]]
# The lines of one forward call: (call, the expression of x, training, the name of the output)
Forward = Callable[[ReproCall, str, bool, str], list[str]]


def snippet(call: ReproCall) -> Snippet | str:
    """The script's PyTorch part for ``call``, or why there is none."""
    if call.layout in STRESS_LAYOUTS:
        return f"reproducers cover contiguous and channels_last input, not yet the stress profile's {call.layout}"
    imports: tuple[str, ...] = ("import torch",)
    if call.user is None:
        if call.impl == FUNCTIONAL_NAMES[call.op]:
            setup, forward = _functional_setup(call), _functional_call
            imports += (FUNCTIONAL_IMPORT,)
        elif call.impl == MODULE_NAMES[call.op]:
            setup, forward = _layer_setup(call), _module_forward
            imports += (MODULE_IMPORT,)
        else:
            return f"PyTorch has no implementation named {call.impl!r}"
    elif call.user.form == "torch_function":
        setup, forward = _functional_setup(call), _user_function_call
    elif call.user.form == "torch_module":
        setup, forward = _user_module_setup(call), _module_forward
    else:
        return f"the torch reproducers have no form {call.user.form!r}"
    code = _helpers(call) + "\n\ndef run(data):\n" + block(setup + _body(call, forward))
    return Snippet(imports, code, 'f"torch {torch.__version__}"', ("torch",))


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
    if call.user is not None and call.user.form == "torch_module":
        text += SET_PARAMETER
    return text


def _body(call: ReproCall, forward: Forward) -> list[str]:
    """The adapter's run: steps under no_grad, x forward and backward, the outputs."""
    lines = []
    if call.params.running_stats:
        lines += ["with torch.no_grad():", '    for batch in data["steps"]:']
        lines += [f"        {line}" for line in forward(call, "tensor(batch, layout=True)", True, "_")]
    lines.append('x = tensor(data["x"], layout=True).requires_grad_(True)')
    lines += forward(call, "x", call.training, "y")
    lines.append('y.backward(tensor(data["dy"], layout=True))')
    outputs = ['"forward": y', '"grad_input": x.grad']
    module = call.user is not None and call.user.form == "torch_module"
    for check, name in (("grad_weight", "weight"), ("grad_bias", "bias")):
        if name in _tensors(call):
            outputs.append(f'"{check}": ' + (f'grad({name}, data["{name}"])' if module else f"{name}.grad"))
    if call.params.running_stats:
        outputs += ['"running_mean": running_mean', '"running_var": running_var']
    lines.append("return numpy({" + ", ".join(outputs) + "})")
    return lines


# -- torch.nn.functional and functions with its signature ------------------------------------


def _functional_setup(call: ReproCall) -> list[str]:
    """Weight and bias as leaves that collect their gradients, running statistics to update in place."""
    lines = []
    if call.params.affine:
        lines.append('weight = tensor(data["weight"]).requires_grad_(True)')
        if call.op != "rms":
            lines.append('bias = tensor(data["bias"]).requires_grad_(True)')
    if call.params.running_stats:
        lines += ['running_mean = tensor(data["running_mean"])', 'running_var = tensor(data["running_var"])']
    return lines


def _tensors(call: ReproCall) -> tuple[str, str, str, str]:
    """The names of weight, bias, running mean and running variance in the script (None: absent)."""
    affine, running = call.params.affine, call.params.running_stats
    return (
        "weight" if affine else "None",
        "bias" if affine and call.op != "rms" else "None",
        "running_mean" if running else "None",
        "running_var" if running else "None",
    )


def _rms_eps(call: ReproCall) -> float | None:
    """None (PyTorch's own default) whenever the case uses that default."""
    return None if call.eps == rms_default_eps(call.dtype) else call.eps


def _functional_call(call: ReproCall, x: str, train: bool, out: str) -> list[str]:
    w, b, rm, rv = _tensors(call)
    p, eps = call.params, call.eps
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
        args, n_required, options = [x, repr(call.normalized_shape), w, b], 2, eps
    else:
        args, n_required, options = [x, repr(call.normalized_shape), w], 2, eps
    if omit:
        while len(args) > n_required and args[-1] == "None":
            args.pop()
    return [f"{out} = IMPL({', '.join(args + _keywords(options, omit))})"]


# -- torch.nn layers and classes with their constructors -----------------------------------


def _layer_setup(call: ReproCall) -> list[str]:
    """adapter._layer and bind_module: the torch.nn layer, its weight and bias set to the case's."""
    p = call.params
    c = call.shape[1] if len(call.shape) > 1 else None
    nd = {2: 1, 3: 1, 4: 2, 5: 3}.get(len(call.shape))
    if call.op == "bn":
        ctor = f"nn.BatchNorm{nd}d({c}, eps={call.eps!r}, momentum={call.momentum!r}, affine={p.affine}, "
        ctor += "track_running_stats=True)"
    elif call.op == "in":
        ctor = f"nn.InstanceNorm{nd}d({c}, eps={call.eps!r}, momentum={call.momentum!r}, affine={p.affine}, "
        ctor += f"track_running_stats={p.running_stats})"
    elif call.op == "gn":
        ctor = f"nn.GroupNorm({p.groups}, {c}, eps={call.eps!r}, affine={p.affine})"
    elif call.op == "ln":
        ctor = f"nn.LayerNorm({call.normalized_shape!r}, eps={call.eps!r}, elementwise_affine={p.affine})"
    else:
        ctor = f"nn.RMSNorm({call.normalized_shape!r}, eps={_rms_eps(call)!r}, elementwise_affine={p.affine})"
    lines = [f"m = {ctor}.to(device=DEVICE, dtype=DTYPE)"]
    w, b, rm, rv = _tensors(call)
    copies = [f'    m.{name}.copy_(tensor(data["{name}"]))' for name in (w, b, rm, rv) if name != "None"]
    if copies:  # the case's weight, bias and initial running statistics
        lines += ["with torch.no_grad():", *copies]
    if call.params.affine:
        lines.append(f"{w}, {b} = m.weight, m.bias" if b != "None" else f"{w} = m.weight")
    return lines


def _user_module_setup(call: ReproCall) -> list[str]:
    """forms.constructor_call and ModuleImplementation: the user's class constructed like the
    torch.nn layer, its parameters set to the case's."""
    p = call.params
    omit = call.user is not None and call.user.omit_defaults
    conv = TORCH[call.op]
    channels = call.shape[1] if len(call.shape) > 1 else None
    eps: Options = {"eps": (call.eps, conv.default_eps(call.dtype))}
    momentum: Options = {"momentum": (call.momentum, conv.default_new_weight)}
    options: Options
    if call.op == "gn":
        args, options = [repr(p.groups), repr(channels)], {**eps, "affine": (p.affine, True)}
    elif call.op == "bn":
        args = [repr(channels)]
        options = {**eps, **momentum, "affine": (p.affine, True), "track_running_stats": (True, True)}
    elif call.op == "in":
        args = [repr(channels)]
        options = {
            **eps,
            **momentum,
            "affine": (p.affine, False),
            "track_running_stats": (p.running_stats, False),
        }
    else:
        args, options = [repr(call.normalized_shape)], {**eps, "elementwise_affine": (p.affine, True)}
    lines = [f"m = IMPL({', '.join(args + _keywords(options, omit))}).to(device=DEVICE, dtype=DTYPE)"]
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
