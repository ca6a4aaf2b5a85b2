"""JAX reproducers: the Flax module or the user's function run as the adapter runs it
(adapter.py's FlaxImplementation and run_case, and forms.py's jax_function and flax_module
forms), as text. Imports no JAX.

The whole case is one function, jitted (user code op by op when it cannot be traced): the
training batches update the running statistics, then ``x`` forward and its vjp with ``dy``.
Flax's own layout is channels last: such cases move the channels last and back. Beyond the five
ops (``COVERS``):

- the variants: Flax's ``LayerNorm(use_bias=False)`` (nobias); user code computes gemma and
  nobias itself, called as for RMS and layer norm (a module constructed with ``use_bias=False``);
- layer norm over given axes: ``LayerNorm(reduction_axes=axes, feature_axes=axes)``, Flax's or
  the user's module's fields;
- a fused add + norm (user code): ``fn(x, residual, weight[, bias], eps)`` or
  ``module.apply(variables, x, residual)``, the vjp of both outputs with dy and dresidual;
- FP8-quantized output (user code): ``fn(x, normalized_shape, weight[, bias], eps[, scale])`` or
  ``module.apply(variables, x[, scale])``, inference only, returning (q, scale);
- adaLN (user code) bound by its parameters' names as normcheck binds it (normcheck.user.modulation,
  the torch reproducers' text), a module's own (D,) scale and bias given the stray values;
- Weight Standardization (user code): ``fn(x, weight, bias, padding=, eps=)`` on NCHW x and the
  OIHW weight, or an ``nn.Conv`` subclass on channels-last x and the HWIO kernel, traced under
  ``jax.default_matmul_precision("highest")``; ``ws_gn`` followed by normcheck's own group norm.
"""

from __future__ import annotations

from typing import Any

from normcheck.frameworks.jax.facts import FLAX_FIELDS, MODULE_NAMES, OPTIONAL_FIELDS, SAFE_SETTING, field_values
from normcheck.names import CHANNELS_LAST
from normcheck.ops import FUSED_BASE
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.ops.quantize import QUANTIZED, QUANTIZED_CHECK, SCALE_CHECK, STATIC
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.weight_standardization import GN_EPS, PAPER, WEIGHT_STANDARDIZATION, WS_GN, WS_OPS, conv_of
from normcheck.repro.bindings import OPTIONS, modulation_text
from normcheck.repro.call import QUANTIZED_DTYPE, ReproCall, Snippet, block, quoted
from normcheck.user.ws_forms import EPS_NAMES, PADDING_NAMES

# What these reproducers write beyond the five plain ops (repro.call.extensions)
COVERS = frozenset({GEMMA, NOBIAS, AXES, FUSED_ADD, QUANTIZED, ADALN, WEIGHT_STANDARDIZATION, PAPER})
HALF = ("float16", "bfloat16")
# the standard library modules every script imports; a kind's own come beside them
STDLIB = ("dataclasses", "os")
IMPORTS = (
    "",
    'os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")',
    "",
    "import flax  # noqa: E402",
    "import flax.linen as nn  # noqa: E402",
    "import jax  # noqa: E402",
    "import jax.numpy as jnp  # noqa: E402",
)
VERSION = 'f"jax {jax.__version__}, flax {flax.__version__}"'

HELPERS = '''\
{x64}DTYPE = jnp.{dtype}
DEVICE = jax.devices("{platform}")[{index}]


def put(a, dtype, layout=False):
    """A copy of a float64 array in ``dtype`` on the device{layout_doc}."""
    a = {move_in}
    return jax.device_put(a.astype(dtype), DEVICE)


def numpy(a, layout=False):
    """An array fetched as float64 NumPy{layout_back_doc}."""
    host = np.asarray(jax.device_get(a))
    return {move_out}.astype(np.float64)
'''

MODULE_APPLY = '''

def apply(params, stats, x, training):
    """The module's forward: (y, the running statistics, updated in training)."""
    {apply}
'''
APPLY_MODULE = {
    False: 'return module.apply({"params": params}, x), stats',
    True: """variables = {"params": params, "batch_stats": stats}
    if not training:
        return module.apply(variables, x, use_running_average=True), stats
    y, updated = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    return y, updated["batch_stats"]""",
}
CASE = '''

def case(params, stats, steps, x, dy):
    """The training batches, then x forward and its vjp with dy."""
    for batch in steps:
        stats = apply(params, stats, batch, True)[1]
    y, pullback, stats = jax.vjp(lambda x_, p_: apply(p_, stats, x_, {training}), x, params, has_aux=True)
    dx, dparams = pullback(dy)
    return y, stats, dx, dparams
'''
STATS_DTYPE = """\
def stats_dtype(shape):
    \"\"\"The dtype the module's own init gives its running statistics.\"\"\"
    x = jax.ShapeDtypeStruct(shape, DTYPE)
    init = lambda x_: module.init(jax.random.key(0), x_, use_running_average=True)  # noqa: E731
    {try_init}
"""
TRACED_INIT = 'return jax.eval_shape(init, x)["batch_stats"]["mean"].dtype'
USER_INIT = """try:
        variables = jax.eval_shape(init, x)
    except TRACING_ERRORS:
        variables = init(jnp.zeros(x.shape, x.dtype))
    return variables["batch_stats"]["mean"].dtype"""
JIT_OR_EAGER = '''
TRACING_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


def jit_or_eager(fn):
    """fn under jax.jit; op by op from the first time it cannot be traced (as normcheck runs user code)."""
    jitted, eager = jax.jit(fn), []

    def call(*args):
        if not eager:
            try:
                return jitted(*args)
            except TRACING_ERRORS:
                eager.append(True)
        return fn(*args)

    return call
'''


# forms._outputs and _pull: what user code returned as a tuple of arrays; the vjp of a case whose
# outputs each take their upstream gradient in their own dtype
VJP = '''

def as_tuple(out):
    """What the code returned, as a tuple of arrays (an array alone as a tuple of one)."""
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def vjp(forward, primals, upstream):
    """(forward's outputs, the gradient of each of ``primals``) by jax.vjp, each upstream gradient
    cast to its output's dtype first."""
    outs, pullback = jax.vjp(forward, *primals)
    return (outs, *pullback(tuple(g.astype(o.dtype) for o, g in zip(outs, upstream))))
'''
FUSED_CASE = '''

def case(params, x, residual, dy, dresidual):
    """Both outputs, (output, residual_out), and their vjp: dy the output's upstream gradient,
    dresidual the residual output's."""

    def forward(x_, r_, p_):
        return as_tuple(apply(p_, x_, r_))

    return vjp(forward, (x, residual, params), (dy, dresidual))
'''
ADALN_CASE = '''

def case(x, shift, scale, dy, *const):
    """y and its vjp with dy, with respect to x, shift and scale (``const``: a module's variables)."""

    def on(x_, shift_, scale_):
        return forward(x_, shift_, scale_, *const)

    return vjp(on, (x, shift, scale), (dy,))
'''
WS_CASE = '''

def case(x, leaves, dy):
    """y and its vjp with dy, with respect to x and the leaves."""
    return vjp(forward, (x, leaves), (dy,))
'''
ADALN_FUNCTION = '''

BINDING = modulation(IMPL)


def forward(x, shift, scale):
    """IMPL on x, shift and scale (and eps where it takes one), bound by its parameters' names."""
    return as_tuple(modulate(IMPL, BINDING, x, shift, scale, {eps!r}))
'''
# forms.ModulationModule: constructed with its width and eps fields, its own (D,) affine set to the
# stray values, applied as module.apply(variables, x, shift, scale) bound by its __call__'s names
ADALN_MODULE = '''

# the fields a module may declare for the width D
WIDTH_FIELDS = {widths!r}
# a module's own (D,) parameters by their last name: 0 its weight, 1 its bias
STRAY = {stray!r}


def fields():
    """The fields the class is constructed with, as normcheck chooses them: D for a width field{eps_doc}."""
    declared = [f.name for f in dataclasses.fields(IMPL)] if dataclasses.is_dataclass(IMPL) else []
    chosen = {{}}
    width = next((n for n in declared if n in WIDTH_FIELDS), None)
    if width is not None:
        chosen[width] = {width}
{eps_lines}    return chosen


module = IMPL(**fields())
BINDING = modulation(functools.partial(IMPL.__call__, None))


def forward(x, shift, scale, variables):
    """module.apply(variables, x, shift, scale), bound by the names of its __call__."""
    apply = lambda *a, **k: module.apply(variables, *a, **k)  # noqa: E731
    return as_tuple(modulate(apply, BINDING, x, shift, scale, None))


def module_variables(data):
    """The module's variables as its init gives them, its own (D,) weight and bias (which adaLN's
    layer norm has none of) set to the stray values."""
    n, _, width = data["x"].shape
    x, rows = jnp.zeros(data["x"].shape, DTYPE), jnp.zeros((n, width), DTYPE)
    init = lambda *a, **k: module.init(jax.random.key(0), *a, **k)  # noqa: E731
    initial = jax.device_get(modulate(init, BINDING, x, rows, rows, None))
    stray = (data["stray_weight"].astype(DTYPE), data["stray_bias"].astype(DTYPE))

    def set_stray(path, a):
        kind = STRAY.get(str(getattr(path[-1], "key", "")).lower()) if path else None
        if path and getattr(path[0], "key", None) == "params" and kind is not None and a.shape == (width,):
            return stray[kind]
        return a

    return jax.device_put(jax.tree_util.tree_map_with_path(set_stray, dict(initial)), DEVICE)
'''
# forms._group_norm: normcheck's own group norm after ws_gn's convolution (tests hold it to the original)
GROUP_NORM = '''

GN_EPS = {eps!r}


def group_norm(y, groups, weight, bias, last):
    """torch.nn.functional.group_norm(y, groups, weight, bias, eps=GN_EPS) on (N, C, H, W) y, or on
    (N, H, W, C) y when ``last``: the statistics in float32 for half dtypes, the output in y's dtype."""
    compute = jnp.float32 if y.dtype in (jnp.float16, jnp.bfloat16) else y.dtype
    n, c = y.shape[0], y.shape[-1 if last else 1]
    g = y.astype(compute).reshape((n, -1, groups, c // groups) if last else (n, groups, -1))
    axes = (1, 3) if last else (2,)
    mean = g.mean(axis=axes, keepdims=True)
    var = jnp.square(g - mean).mean(axis=axes, keepdims=True)
    out = ((g - mean) * jax.lax.rsqrt(var + GN_EPS)).reshape(y.shape)
    shape = (1,) * (y.ndim - 1) + (c,) if last else (1, c) + (1,) * (y.ndim - 2)
    if weight is not None:
        out = out * weight.astype(compute).reshape(shape)
    if bias is not None:
        out = out + bias.astype(compute).reshape(shape)
    return out.astype(y.dtype)
'''
# normcheck.frameworks.quantized_result.quantized_outputs, with forms.py's arrays
QUANTIZED_OUTPUTS = '''

def is_array(v):
    return isinstance(v, (jax.Array, np.ndarray, np.generic))


def quantized(result, static):
    """What FP8 code returned, as normcheck reads it: (q, scale), or q alone where the scale was
    given (``static``); q's values as float64 and the dtype it came in, and the scale."""
    q, scale = (result, None) if is_array(result) and static else result
    host = np.asarray(jax.device_get(q))
    out = {{{q_key}: host.astype(np.float64), {dtype_key}: str(host.dtype)}}
    if is_array(scale):
        out[{scale_key}] = numpy(scale)
    elif scale is not None:
        out[{scale_key}] = np.asarray(float(scale))
    return out
'''
USER_FORMS = ("jax_function", "flax_module")
# forms.WIDTH_FIELDS and STRAY (tests check these against forms.py)
WIDTH_FIELDS = ("hidden_size", "features", "num_features", "dim", "width", "embed_dim")
STRAY = {"scale": 0, "weight": 0, "gamma": 0, "bias": 1, "beta": 1}
HWIO = (2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O): Flax's kernel layout
OIHW = (3, 2, 0, 1)  # and back
# (the stdlib modules a script imports beside STDLIB, the code after the helpers)
Made = tuple[tuple[str, ...], str]


def snippet(call: ReproCall) -> Snippet | str:
    """The script's JAX part for ``call``, or why there is none."""
    user = call.user
    if user is None:
        made = _built_in(call)
    elif user.form in USER_FORMS:
        made = _user_code(call, module=user.form == "flax_module")
    else:
        return f"the jax reproducers have no form {user.form!r}"
    if isinstance(made, str):
        return made
    stdlib, code = made
    imports = (*(f"import {name}" for name in sorted({*STDLIB, *stdlib})), *IMPORTS)
    return Snippet(imports, _helpers(call) + code, VERSION, ("jax", "flax"))


def _built_in(call: ReproCall) -> Made | str:
    """adapter.py's FlaxImplementation: the Flax module, jitted."""
    base = MODULE_NAMES.get(call.op)
    if base is None or call.impl not in (base, f"{base}({SAFE_SETTING})"):
        return f"JAX has no implementation named {call.impl!r}"
    return (), _plain(call, _flax_module(call, fast_variance=call.impl == base), APPLY_MODULE, TRACED_INIT, "")


def _user_code(call: ReproCall, module: bool) -> Made:
    """forms.build: the implementation of each kind of case, in the jax_function or flax_module form."""
    if call.op in WS_OPS:
        return _ws(call, module)
    if call.op in FUSED_BASE:
        return _fused(call, module)
    if call.op == ADALN:
        return _adaln(call, module)
    if call.params.quant is not None:
        return _quantized(call, module)
    if module:
        return (), _plain(call, _user_module(call), APPLY_MODULE, USER_INIT, JIT_OR_EAGER)
    return (), _plain(call, _user_function(call), None, "", JIT_OR_EAGER)


def _plain(call: ReproCall, setup: list[str], apply: dict[bool, str] | None, init: str, jit: str) -> str:
    """adapter.case_function and run_case: the training steps, x forward and its vjp."""
    code = jit + "\n\n" + "\n".join(setup)
    if apply is not None:
        code += MODULE_APPLY.format(apply=apply[call.op == "bn"])
        if call.op == "bn":
            code += "\n\n" + STATS_DTYPE.format(try_init=init)
    code += CASE.format(training=call.training)
    return code + _run_def(_run(call, call.user is not None))


def _helpers(call: ReproCall) -> str:
    last = call.layout == CHANNELS_LAST
    platform, _, index = call.device.partition(":")
    return HELPERS.format(
        x64='jax.config.update("jax_enable_x64", True)  # float64 exists in JAX only with x64\n\n'
        if call.dtype == "float64"
        else "",
        dtype=call.dtype,
        platform="cpu" if platform == "cpu" else "gpu",
        index=int(index or 0),
        layout_doc=", channels moved last when ``layout``" if last else "",
        layout_back_doc=", channels moved back to axis 1 when ``layout``" if last else "",
        move_in="np.moveaxis(a, 1, -1).copy() if layout else np.array(a)" if last else "np.array(a)",
        move_out="(np.moveaxis(host, -1, 1) if layout else host)" if last else "host",
    )


def _run_def(lines: list[str]) -> str:
    return "\n\ndef run(data):\n" + block(lines)


def _params(call: ReproCall) -> str:
    """adapter.variables: params "scale" and "bias", those the case has."""
    given = ['"scale": put(data["weight"], DTYPE)'] if call.params.affine else []
    given += ['"bias": put(data["bias"], DTYPE)'] if call.has_bias else []
    return "params = {" + ", ".join(given) + "}"


def _param_grads(call: ReproCall) -> list[str]:
    """The gradients of the params (``_params``) as the checks grad_weight and grad_bias."""
    grads = ['out["grad_weight"] = numpy(dparams["scale"])'] if call.params.affine else []
    return grads + (['out["grad_bias"] = numpy(dparams["bias"])'] if call.has_bias else [])


def _run(call: ReproCall, user: bool) -> list[str]:
    """adapter.run_case: params "scale" and "bias", running statistics "mean" and "var", the case
    function on the arrays in the layout, the outputs back."""
    p = call.params
    lines = [_params(call)]
    if p.running_stats:
        dtype = _function_stats_dtype(call) if call.user is not None and call.user.form == "jax_function" else None
        if dtype is None:
            lines.append(f"dtype = stats_dtype({_stats_shape(call)!r})")
            dtype = "dtype"
        lines.append(
            f'stats = {{"mean": put(data["running_mean"], {dtype}), "var": put(data["running_var"], {dtype})}}'
        )
        lines.append('steps = tuple(put(b, DTYPE, layout=True) for b in data["steps"])')
    else:
        lines += ["stats = {}", "steps = ()"]
    run = "jit_or_eager(case)" if user else "jax.jit(case)"
    lines += [
        f'y, stats, dx, dparams = {run}(params, stats, steps, put(data["x"], DTYPE, layout=True), '
        'put(data["dy"], DTYPE, layout=True))',
        'out = {"forward": numpy(y, layout=True), "grad_input": numpy(dx, layout=True)}',
    ]
    lines += _param_grads(call)
    if p.running_stats:
        lines.append('out.update(running_mean=numpy(stats["mean"]), running_var=numpy(stats["var"]))')
    return [*lines, "return out"]


def _stats_shape(call: ReproCall) -> tuple[int, ...]:
    """The shape the running statistics' dtype is looked up with: the adapter's (2,) * ndim for a
    Flax module, the case's own shape (in the layout) for a user's."""
    if call.user is None:
        return (2,) * len(call.shape)
    return _layout_shape(call)


def _layout_shape(call: ReproCall) -> tuple[int, ...]:
    s = call.shape
    return (s[0], *s[2:], s[1]) if call.layout == CHANNELS_LAST else tuple(s)


# -- Flax modules ------------------------------------------------------------------------------


def _flax_module(call: ReproCall, fast_variance: bool) -> list[str]:
    """adapter.build: the Flax module with parameters and computation in the case dtype (layer norm
    over the case's axes, without a bias for the nobias variant)."""
    p = call.params
    common = (
        f"epsilon={call.eps!r}, dtype=DTYPE, param_dtype=DTYPE, use_fast_variance={fast_variance}, use_scale={p.affine}"
    )
    ndim = len(call.shape)
    axis = -1 if call.layout == CHANNELS_LAST else 1
    trailing = tuple(range(ndim - (p.normalized_ndim or 0), ndim))
    ln_axes = tuple(p.axes) if p.axes is not None else trailing  # Flax's LayerNorm takes any axes
    ctor = {
        "rms": f"nn.RMSNorm(reduction_axes={trailing}, feature_axes={trailing}, {common})",
        "bn": f"nn.BatchNorm(axis={axis}, momentum={call.framework_momentum!r}, {common}, use_bias={call.has_bias})",
        "in": f"nn.InstanceNorm(feature_axes={axis}, {common}, use_bias={call.has_bias})",
        "gn": f"nn.GroupNorm(num_groups={p.groups}, {common}, use_bias={call.has_bias})",
        "ln": f"nn.LayerNorm(reduction_axes={ln_axes}, feature_axes={ln_axes}, {common}, use_bias={call.has_bias})",
    }[call.op]
    return [f"module = {ctor}"]


def _user_module(call: ReproCall) -> list[str]:
    """forms.ModuleImplementation.fields: the user's class constructed with the fields of the Flax
    layer (with defaults omitted, only those it requires or that differ from the Flax default):
    nobias as use_bias=False, given axes as reduction_axes = feature_axes."""
    values = field_values(call.params, call.eps, call.framework_momentum)
    base = FUSED_BASE.get(call.op, call.op)  # a fused op's norm's
    candidates = {name: (values[name], default) for name, default in FLAX_FIELDS[base].items()}
    omit = call.user is not None and call.user.omit_defaults
    return [
        f"CANDIDATES = {candidates!r}  # field: (value for the case, the Flax layer's default)",
        "",
        "",
        "def fields():",
        '    """The fields the class is constructed with, as normcheck chooses them."""',
        "    declared = {f.name: f for f in dataclasses.fields(IMPL)} if dataclasses.is_dataclass(IMPL) else {}",
        "    chosen = {}",
        "    for name, (value, default) in CANDIDATES.items():",
        "        field = declared.get(name)",
        f"        if name in {OPTIONAL_FIELDS!r} and field is None:",
        "            continue",
        "        required = field is not None and field.default is dataclasses.MISSING and "
        "field.default_factory is dataclasses.MISSING",
        f"        if {omit} and value == default and not required:",
        "            continue",
        "        chosen[name] = value",
        "    return chosen",
        "",
        "",
        "module = IMPL(**fields())",
    ]


# -- functions with torch.nn.functional's signature --------------------------------------------


def _function_stats_dtype(call: ReproCall) -> str:
    """forms._function_stats_dtype: float32 for half input, else the input's dtype."""
    return "jnp.float32" if call.dtype in HALF else "DTYPE"


def _user_function(call: ReproCall) -> list[str]:
    """forms.FunctionImplementation.call and _function_apply: the user's function called like the
    torch.nn.functional op on channels-first arrays; with running statistics it returns
    (y, new_running_mean, new_running_var)."""
    p, op = call.params, call.op
    omit = call.user is not None and call.user.omit_defaults
    kwargs: dict[str, Any] = {}
    if not omit:
        kwargs["eps"] = call.eps
        if op in ("bn", "in"):
            kwargs["momentum"] = call.framework_momentum
        if op == "in" and not p.running_stats:
            kwargs.update(running_mean=None, running_var=None)
    weight_names = ("weight",) if op == "rms" else ("weight", "bias")
    if not p.affine and not omit:
        kwargs.update(dict.fromkeys(weight_names))
    args: tuple = ()
    if op == "gn":
        args = (p.groups,)
    elif op in ("ln", "rms"):
        args = (call.normalized_shape,)
    flag, flag_default = {"bn": ("training", False), "in": ("use_input_stats", True)}.get(op, (None, False))
    names = weight_names if p.affine else ()
    lines = [
        "def apply(params, stats, x, training):",
        f"    kwargs = {kwargs!r}",
        f'    kwargs.update(zip({names!r}, (params.get("scale"), params.get("bias")), strict=False))',
        f"    args = (x, *{args!r})",
    ]
    if p.running_stats and op == "bn":
        lines.append('    args += (stats["mean"], stats["var"])')
    elif p.running_stats:
        lines.append('    kwargs.update(running_mean=stats["mean"], running_var=stats["var"])')
    if flag:
        condition = f"training != {flag_default}" if omit else "True"
        lines += [f"    if {condition}:", f"        kwargs[{flag!r}] = training"]
    lines.append("    out = IMPL(*args, **kwargs)")
    lines.append('    return out[0], {"mean": out[1], "var": out[2]}' if p.running_stats else "    return out, stats")
    return lines


# -- fused add + norm and FP8 output: an apply function, the function's or the module's ----------


def _apply_def(args: str, expr: str) -> list[str]:
    """``apply(params, <args>)`` returning ``expr``: what the user's code returned."""
    return ["", "", f"def apply(params, {args}):", f"    return {expr}"]


def _fused(call: ReproCall, module: bool) -> Made:
    """forms.FusedFunction (``fn(x, residual, weight[, bias], eps)``, all positional, ones for a
    case without a weight) and FusedModule (``module.apply(variables, x, residual)``)."""
    if module:
        setup = [*_user_module(call), *_apply_def("x, residual", 'module.apply({"params": params}, x, residual)')]
    else:
        weight = 'params["scale"]' if call.params.affine else f"jnp.ones({call.param_shape!r}, DTYPE)"
        args = ["x", "residual", weight, *(['params.get("bias")'] if call.op == "add_ln" else []), repr(call.eps)]
        setup = _apply_def("x, residual", f"IMPL({', '.join(args)})")
    inputs = '*(put(data[k], DTYPE) for k in ("x", "residual", "dy", "dresidual"))'
    lines = [
        _params(call),
        f"(y, h), dx, dr, dparams = jit_or_eager(case)(params, {inputs})",
        'out = {"forward": numpy(y), "residual_out": numpy(h), "grad_input": numpy(dx), "grad_residual": numpy(dr)}',
        *_param_grads(call),
        "return out",
    ]
    return (), JIT_OR_EAGER + VJP + "\n".join(setup) + "\n" + FUSED_CASE + _run_def(lines)


def _quantized(call: ReproCall, module: bool) -> Made:
    """forms' quantized cases: ``fn(x, normalized_shape, weight[, bias], eps[, scale])`` all
    positional, or ``module.apply(variables, x[, scale])``; inference only, x contiguous."""
    static = call.params.quant is not None and call.params.quant.scale == STATIC
    scale = ", scale" if static else ""
    if module:
        setup = [*_user_module(call), *_apply_def("x, scale", f'module.apply({{"params": params}}, x{scale})')]
    else:
        bias = ['params.get("bias")'] if call.op == "ln" else []
        args = ["x", repr(call.normalized_shape), 'params.get("scale")', *bias, repr(call.eps)]
        setup = _apply_def("x, scale", f"IMPL({', '.join(args)}{scale})")
    given = 'jax.device_put(np.asarray(data["quant_scale"], dtype=np.float32).reshape(()), DEVICE)'
    lines = [
        _params(call),
        f"scale = {given if static else None}  # forms.static_scale: float32, shape ()",
        f'return quantized(jit_or_eager(apply)(params, put(data["x"], DTYPE), scale), static={static})',
    ]
    outputs = QUANTIZED_OUTPUTS.format(
        q_key=quoted(QUANTIZED_CHECK), dtype_key=quoted(QUANTIZED_DTYPE), scale_key=quoted(SCALE_CHECK)
    )
    return (), JIT_OR_EAGER + outputs + "\n".join(setup) + "\n" + _run_def(lines)


# -- adaLN: bound by the parameters' names (normcheck.user.modulation, the torch reproducers' text) --


def _adaln(call: ReproCall, module: bool) -> Made:
    """forms.ModulationFunction (eps always given where it takes one) and ModulationModule; scale
    is the case's weight and shift its bias."""
    setup = _adaln_module(call) if module else ADALN_FUNCTION.format(eps=call.eps)
    const = ", module_variables(data)" if module else ""
    lines = [
        'x, shift, scale, dy = (put(data[k], DTYPE) for k in ("x", "bias", "weight", "dy"))',
        f"(y,), dx, dshift, dscale = jit_or_eager(case)(x, shift, scale, dy{const})",
        'out = {"forward": numpy(y), "grad_input": numpy(dx)}',
        'return {**out, "grad_weight": numpy(dscale), "grad_bias": numpy(dshift)}',
    ]
    code = JIT_OR_EAGER + modulation_text() + VJP + setup + ADALN_CASE + _run_def(lines)
    return ("functools", "inspect") if module else ("inspect",), code


def _adaln_module(call: ReproCall) -> str:
    give_eps = call.user is not None and not call.user.omit_defaults
    eps_lines = [
        'eps = next((n for n in declared if n.lower() in ROLES["eps"]), None)',
        "if eps is not None:",
        f"    chosen[eps] = {call.eps!r}",
    ]
    return ADALN_MODULE.format(
        widths=WIDTH_FIELDS,
        stray=STRAY,
        eps_doc=", the case's eps for an eps field" if give_eps else "",
        width=call.shape[-1],
        eps_lines=block(eps_lines) if give_eps else "",
    )


# -- Weight Standardization: the user's convolution, then ws_gn's group norm -------------------


def _ws(call: ReproCall, module: bool) -> Made:
    """forms.WSFunction and WSModule: forward and vjp of x and the leaves (the weight, the bias,
    ws_gn's group norm affine, those the case has) under float32 matmul precision."""
    gn = GROUP_NORM.format(eps=GN_EPS) if call.op == WS_GN else ""
    conv = _ws_module_conv(call) if module else _ws_function_conv(call)
    code = JIT_OR_EAGER + OPTIONS + VJP + gn + "\n\n" + "\n".join([*conv, "", "", *_ws_forward(call, module)])
    return ("inspect",), code + WS_CASE + _run_def(_ws_run(call, module))


def _eps_option(call: ReproCall) -> list[str]:
    """eps by the name the code takes it under, in the explicit call style (forms._eps_argument)."""
    return [f"({EPS_NAMES!r}, {call.eps!r})"] if call.user is not None and not call.user.omit_defaults else []


def _ws_function_conv(call: ReproCall) -> list[str]:
    """``fn(x, weight, bias, padding=p, eps=e)`` by the names it takes them (forms.WSFunction.call)."""
    given = [f"({PADDING_NAMES!r}, {conv_of(call.params)[2]})", *_eps_option(call)]
    return [
        f"KWARGS = options(IMPL, {', '.join(given)})",
        "",
        "",
        "def conv(x, weight, bias):",
        '    """IMPL on NCHW x and the OIHW weight."""',
        "    return IMPL(x, weight, bias, **KWARGS)",
    ]


def _ws_module_conv(call: ReproCall) -> list[str]:
    """The nn.Conv subclass constructed as nn.Conv is (forms.WSModule.call), its params set."""
    o, k, p = conv_of(call.params)
    eps = _eps_option(call)
    given = f", **options(IMPL, {eps[0]})" if eps else ""
    return [
        f"module = IMPL(features={o}, kernel_size=({k}, {k}), padding=(({p}, {p}), ({p}, {p})), "
        f"use_bias={call.has_bias}{given})",
        "",
        "",
        "def conv(x, kernel, bias):",
        '    """The module on channels-last x, its params nn.Conv\'s kernel (kh, kw, C, O) and bias."""',
        '    params = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}',
        '    return module.apply({"params": params}, x)',
    ]


def _ws_forward(call: ReproCall, module: bool) -> list[str]:
    """forms._ws_forward: the convolution at float32 precision (XLA's default on a GPU rounds a
    float32 convolution's operands to TF32), then ws_gn's group norm."""
    lines = [
        "def forward(x, leaves):",
        '    with jax.default_matmul_precision("highest"):  # float32 convolutions in float32',
        '        y = as_tuple(conv(x, leaves["weight"], leaves.get("bias")))[0]',
    ]
    if call.op == WS_GN:
        norm = f'group_norm(y, {call.params.groups}, leaves.get("gn_weight"), leaves.get("gn_bias"), last={module})'
        lines.append(f"    y = {norm}")
    return [*lines, "    return (y,)"]


def _ws_leaves(call: ReproCall) -> list[tuple[str, str]]:
    """(the leaf, its gradient's check): the weight, and those the case has of the bias and ws_gn's affine."""
    leaves = [("weight", "grad_weight")] + ([("bias", "grad_bias")] if call.has_bias else [])
    if call.op == WS_GN and call.params.affine:
        leaves += [("gn_weight", "grad_gn_weight"), ("gn_bias", "grad_gn_bias")]
    return leaves


def _ws_run(call: ReproCall, module: bool) -> list[str]:
    """forms.ws_inputs and _run_ws: x and dy in the layout, a module's kernel (kh, kw, C, O) and
    its gradient reported as (O, C, kh, kw)."""
    given = [f'"{name}": put(data["{name}"], DTYPE)' for name, _ in _ws_leaves(call)]
    if module:
        given[0] = f'"weight": put(np.transpose(data["weight"], {HWIO}), DTYPE)'
    lines = [
        "leaves = {" + ", ".join(given) + "}",
        'x, dy = put(data["x"], DTYPE, layout=True), put(data["dy"], DTYPE, layout=True)',
        "(y,), dx, dleaves = jit_or_eager(case)(x, leaves, dy)",
        'out = {"forward": numpy(y, layout=True), "grad_input": numpy(dx, layout=True)}',
    ]
    for name, check in _ws_leaves(call):
        back = f".transpose({OIHW})" if module and name == "weight" else ""
        lines.append(f'out["{check}"] = numpy(dleaves["{name}"]){back}')
    return [*lines, "return out"]
