"""JAX reproducers: the Flax module or the user's function run as the adapter runs it
(adapter.py's FlaxImplementation and run_case, and forms.py's jax_function and flax_module
forms), as text. Imports no JAX.

The whole case is one function, jitted (user code op by op when it cannot be traced): the
training batches update the running statistics, then ``x`` forward and its vjp with ``dy``.
Flax's own layout is channels last: such cases move the channels last and back.
"""

from __future__ import annotations

from typing import Any

from normcheck.frameworks.jax.facts import FLAX_FIELDS, MODULE_NAMES, OPTIONAL_FIELDS, SAFE_SETTING, field_values
from normcheck.names import CHANNELS_LAST
from normcheck.repro.call import ReproCall, Snippet, block

HALF = ("float16", "bfloat16")
IMPORTS = (
    "import dataclasses",
    "import os",
    "",
    'os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")',
    "",
    "import flax  # noqa: E402",
    "import flax.linen as nn  # noqa: E402",
    "import jax  # noqa: E402",
    "import jax.numpy as jnp  # noqa: E402",
)

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


def snippet(call: ReproCall) -> Snippet | str:
    """The script's JAX part for ``call``, or why there is none."""
    user = call.user
    if user is None:
        base = MODULE_NAMES[call.op]
        if call.impl not in (base, f"{base}({SAFE_SETTING})"):
            return f"JAX has no implementation named {call.impl!r}"
        setup, apply, init, jit = _flax_module(call, fast_variance=call.impl == base), APPLY_MODULE, TRACED_INIT, ""
    elif user.form == "flax_module":
        setup, apply, init, jit = _user_module(call), APPLY_MODULE, USER_INIT, JIT_OR_EAGER
    elif user.form == "jax_function":
        setup, apply, init, jit = _user_function(call), None, "", JIT_OR_EAGER
    else:
        return f"the jax reproducers have no form {user.form!r}"
    code = _helpers(call) + jit + "\n\n" + "\n".join(setup)
    if apply is not None:
        code += MODULE_APPLY.format(apply=apply[call.op == "bn"])
        if call.op == "bn":
            code += "\n\n" + STATS_DTYPE.format(try_init=init)
    code += CASE.format(training=call.training)
    code += "\n\ndef run(data):\n" + block(_run(call, user is not None))
    return Snippet(IMPORTS, code, 'f"jax {jax.__version__}, flax {flax.__version__}"', ("jax", "flax"))


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


def _run(call: ReproCall, user: bool) -> list[str]:
    """adapter.run_case: params "scale" and "bias", running statistics "mean" and "var", the case
    function on the arrays in the layout, the outputs back."""
    p = call.params
    params = []
    if p.affine:
        params.append('"scale": put(data["weight"], DTYPE)')
        if call.op != "rms":
            params.append('"bias": put(data["bias"], DTYPE)')
    lines = ["params = {" + ", ".join(params) + "}"]
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
    if p.affine:
        lines.append('out["grad_weight"] = numpy(dparams["scale"])')
        if call.op != "rms":
            lines.append('out["grad_bias"] = numpy(dparams["bias"])')
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
    """adapter.build: the Flax module with parameters and computation in the case dtype."""
    p = call.params
    common = (
        f"epsilon={call.eps!r}, dtype=DTYPE, param_dtype=DTYPE, use_fast_variance={fast_variance}, use_scale={p.affine}"
    )
    ndim = len(call.shape)
    axis = -1 if call.layout == CHANNELS_LAST else 1
    trailing = tuple(range(ndim - (p.normalized_ndim or 0), ndim))
    ctor = {
        "rms": f"nn.RMSNorm(reduction_axes={trailing}, feature_axes={trailing}, {common})",
        "bn": f"nn.BatchNorm(axis={axis}, momentum={call.framework_momentum!r}, {common}, use_bias={p.affine})",
        "in": f"nn.InstanceNorm(feature_axes={axis}, {common}, use_bias={p.affine})",
        "gn": f"nn.GroupNorm(num_groups={p.groups}, {common}, use_bias={p.affine})",
        "ln": f"nn.LayerNorm(reduction_axes={trailing}, feature_axes={trailing}, {common}, use_bias={p.affine})",
    }[call.op]
    return [f"module = {ctor}"]


def _user_module(call: ReproCall) -> list[str]:
    """forms.ModuleImplementation.fields: the user's class constructed with the fields of the Flax
    layer (with defaults omitted, only those it requires or that differ from the Flax default)."""
    values = field_values(call.params, call.eps, call.framework_momentum)
    candidates = {name: (values[name], default) for name, default in FLAX_FIELDS[call.op].items()}
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
