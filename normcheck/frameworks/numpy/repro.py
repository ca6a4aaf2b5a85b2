"""NumPy reproducers: CS231n-style forward/backward functions (``--style cs231n``) called as
forms.py's Cs231nImplementation calls them, as text.

``IMPL(x, gamma, beta, [G,] param) -> (out, cache)`` on copies of the inputs in the case's dtype,
batch norm's running statistics passed in and read back from its param dict, then
``BACKWARD(dout, cache) -> (dx, dgamma, dbeta)``.
"""

from __future__ import annotations

from normcheck.ops import OPS, broadcast_channels
from normcheck.repro.call import ReproCall, Snippet, block

NUMPY_DTYPES = {"float64": "np.float64", "float32": "np.float32", "float16": "np.float16"}
OPS_WITH_FORM = ("bn", "ln", "gn")

HELPERS = '''\
DTYPE = {dtype}
PARAM = {param!r}  # the options in the param dict (eps, and batch norm's momentum as the weight of the old value)


def forward(x, gamma, beta, param):
    """One call of the forward: (out, cache); it may write into ``param``."""
    out, cache = {call}
    return np.asarray(out), cache
'''

BATCH_NORM = '''

def batch_norm(x, gamma, beta, mode, running):
    """One batch-norm call with copies of the running statistics in bn_param; the values it wrote back."""
    param = {"mode": mode, **PARAM}
    if running is not None:
        param["running_mean"], param["running_var"] = (np.array(r, copy=True) for r in running)
    result = forward(x, gamma, beta, param)
    if running is None:
        return result, None
    return result, (np.array(param["running_mean"], copy=True), np.array(param["running_var"], copy=True))
'''


def snippet(call: ReproCall) -> Snippet | str:
    """The script's NumPy part for ``call``, or why there is none."""
    if call.user is None or call.user.form != "cs231n":
        return "NumPy's reproducers are for the cs231n style only"
    if call.dtype not in NUMPY_DTYPES:
        return f"NumPy has no {call.dtype}"
    if call.op not in OPS_WITH_FORM:
        return f"the cs231n style has no {call.op}"
    param: dict[str, float | None] = {}
    if not call.user.omit_defaults:
        param["eps"] = call.eps
        if call.op == "bn":
            param["momentum"] = call.framework_momentum
    args = "x, gamma, beta, " + (f"{call.params.groups}, " if call.op == "gn" else "") + "param"
    code = HELPERS.format(dtype=NUMPY_DTYPES[call.dtype], param=param, call=f"IMPL({args})")
    if call.op == "bn":
        code += BATCH_NORM
    code += "\n\ndef run(data):\n" + block(_run(call))
    return Snippet((), code, 'f"numpy {np.__version__}"', ())


def _run(call: ReproCall) -> list[str]:
    """Cs231nImplementation.run, affine and _add_grads."""
    p = call.params
    canonical = OPS[call.op].param_shape(call.shape, p)
    passed = broadcast_channels(len(call.shape), call.shape[1]) if call.op == "gn" else canonical
    weight = 'data["weight"]' if p.affine else f"np.ones({canonical!r})"
    bias = 'data["bias"]' if p.affine else f"np.zeros({canonical!r})"
    lines = [
        f"gamma = np.asarray({weight}).reshape({passed!r}).astype(DTYPE)",
        f"beta = np.asarray({bias}).reshape({passed!r}).astype(DTYPE)",
        'x = data["x"].astype(DTYPE)',
        "out = {}",
    ]
    if p.running_stats:
        mode = "train" if p.mode == "train" else "test"
        lines += [
            'running = (data["running_mean"].astype(DTYPE), data["running_var"].astype(DTYPE))',
            'for batch in data["steps"]:',
            '    _, running = batch_norm(batch.astype(DTYPE), gamma, beta, "train", running)',
            f"(y, cache), running = batch_norm(x, gamma, beta, {mode!r}, running)",
            'out["running_mean"], out["running_var"] = running',
        ]
    elif call.op == "bn":
        lines.append('(y, cache), _ = batch_norm(x, gamma, beta, "train", None)')
    else:
        lines.append("y, cache = forward(x, gamma, beta, PARAM.copy())")
    lines.append('out["forward"] = y')
    if not (p.running_stats and p.mode == "eval"):  # the backward is defined for training mode only
        lines += [
            'dx, dgamma, dbeta = BACKWARD(data["dy"].astype(DTYPE), cache)',
            'out["grad_input"] = np.asarray(dx)',
        ]
        if p.affine:
            lines += [
                f'out["grad_weight"] = np.asarray(dgamma).reshape({canonical!r})',
                f'out["grad_bias"] = np.asarray(dbeta).reshape({canonical!r})',
            ]
    return [*lines, "return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}"]
