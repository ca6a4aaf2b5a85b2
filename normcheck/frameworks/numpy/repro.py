"""NumPy reproducers: CS231n-style forward/backward functions (``--style cs231n``) called as
forms.py's Cs231nImplementation and variants.py's pairs call them, as text.

Every call gets copies of the inputs in the case's dtype and a param dict of the options (eps,
left out in the defaults call style); the backward (``BACKWARD``, which the style requires) gets
the forward's cache. Beyond the plain ops (``COVERS``, what variants.py's pairs declare):

- bn, ln, gn: ``IMPL(x, gamma, beta, [G,] param) -> (out, cache)``, batch norm's running
  statistics passed in and read back from its param dict, then
  ``BACKWARD(dout, cache) -> (dx, dgamma, dbeta)``;
- adaLN: ``IMPL(x, shift, scale, ln_param) -> (out, cache)``, shift the case's bias and scale its
  weight, then ``BACKWARD(dout, cache) -> (dx, dshift, dscale)``;
- the fused add + layer norm: ``IMPL(x, residual, gamma, beta, ln_param) -> (out, residual_out,
  cache)``, then ``BACKWARD(dout, dresidual_out, cache) -> (dx, dresidual, dgamma, dbeta)``;
- Weight Standardization (and the paper's variant, which the user's code computes itself):
  ``IMPL(x, w, b, conv_param) -> (out, cache)``, then ``BACKWARD(dout, cache) -> (dx, dw, db)``;
  for ws_gn normcheck's own group norm follows the convolution, written into the script as
  variants.GroupNormAfter computes it (its float32 for float16 input), its input gradient the
  one the user's backward is given.
"""

from __future__ import annotations

from collections.abc import Callable

from normcheck.ops import OPS, broadcast_channels
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.weight_standardization import GN_EPS, PAPER, WEIGHT_STANDARDIZATION, WS, WS_GN, conv_of
from normcheck.repro.call import ReproCall, Snippet, block

# What these reproducers write beyond the plain ops (repro.call.extensions)
COVERS = frozenset({ADALN, FUSED_ADD, WEIGHT_STANDARDIZATION, PAPER})
NUMPY_DTYPES = {"float64": "np.float64", "float32": "np.float32", "float16": "np.float16"}
ADD_LN = "add_ln"

HEADER = '''\
DTYPE = {dtype}
PARAM = {param!r}  # the options in the param dict{param_note}


def copies(*arrays):
    """Copies of ``arrays`` in the case's dtype: what one case's calls are given."""
    return tuple(np.asarray(a).astype(DTYPE) for a in arrays)


def float64(outputs):
    """Each output as float64 NumPy."""
    return {{k: np.asarray(v, dtype=np.float64) for k, v in outputs.items()}}
'''

FORWARD = '''

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

# normcheck.frameworks.numpy.variants.GroupNormAfter: normcheck's Normalization of group norm
GROUP_NORM = '''

GN_GROUPS, GN_EPS = {groups}, {eps!r}  # ws_gn's group norm after the convolution (torch.nn.GroupNorm's eps)
GN_COMPUTE = {compute}  # the dtype it computes in: float32 for float16 input
GN_AXES = (2, 3, 4)  # a group's axes in the (N, G, C // G, H, W) view


def gn_view(a):
    """``a`` (N, C, H, W) in GN_COMPUTE, viewed as (N, G, C // G, H, W)."""
    n, c, h, w = np.shape(a)
    return np.asarray(a, dtype=GN_COMPUTE).reshape(n, GN_GROUPS, c // GN_GROUPS, h, w)


def gn_mean_of_product(a, b):
    """mean(a * b) over each group, kept as size 1: one einsum pass in float64, NumPy's pairwise
    mean in the other dtypes."""
    if GN_COMPUTE is not np.float64:
        return (a * b).mean(axis=GN_AXES, keepdims=True, dtype=GN_COMPUTE)
    count = a.shape[2] * a.shape[3] * a.shape[4]
    return (np.einsum("abcde,abcde->ab", a, b) / count).reshape(a.shape[0], a.shape[1], 1, 1, 1)


def gn_channel_sum(a, b=None):
    """sum(a * b) (or of ``a``) over the axes the affine is broadcast along, as (C,): one einsum
    pass for a product in float64."""
    axes = tuple(i for i in (0, 3, 4) if a.shape[i] != 1)
    if b is None:
        return a.sum(axis=axes).reshape(-1)
    if GN_COMPUTE is not np.float64:
        return (a * b).sum(axis=axes).reshape(-1)
    kept = "".join(c for i, c in enumerate("abcde") if i not in axes)
    return np.einsum(f"abcde,abcde->{{kept}}", a, b).reshape(-1)


def gn_param(p):
    """A weight or bias (C,) in GN_COMPUTE, broadcast against the view; None stays None."""
    return None if p is None else np.asarray(p, dtype=GN_COMPUTE).reshape(1, GN_GROUPS, -1, 1, 1)


def group_norm_forward(y, weight, bias):
    """The group norm of ``y`` with the affine ``weight`` and ``bias`` (or None), computed in
    GN_COMPUTE and returned in the case's dtype; and what its backward needs."""
    v = gn_view(y)
    centered = v - v.mean(axis=GN_AXES, keepdims=True, dtype=GN_COMPUTE)
    rstd = 1.0 / np.sqrt(gn_mean_of_product(centered, centered) + GN_COMPUTE(GN_EPS))
    xhat = centered * rstd
    w, b = (gn_param(p) for p in (weight, bias))
    z = xhat * w if w is not None else xhat.copy()
    if b is not None:
        z += b
    return z.reshape(np.shape(y)).astype(DTYPE), (xhat, rstd, w, b is not None)


def group_norm_backward(dout, saved):
    """The group norm's input gradient in the case's dtype, and its affine's gradients."""
    xhat, rstd, w, with_bias = saved
    g = gn_view(dout)
    dxhat = g * w if w is not None else g
    dx = dxhat - xhat * gn_mean_of_product(dxhat, xhat)
    dx -= dxhat.mean(axis=GN_AXES, keepdims=True, dtype=GN_COMPUTE)
    dx *= rstd
    grads = {{}}
    if w is not None:
        grads["grad_gn_weight"] = gn_channel_sum(g, xhat).astype(DTYPE)
    if with_bias:
        grads["grad_gn_bias"] = gn_channel_sum(g).astype(DTYPE)
    return dx.reshape(np.shape(dout)).astype(DTYPE), grads
'''

# (the code after the header, the param dict's options, what they mean)
Written = tuple[str, dict[str, object], str]


def snippet(call: ReproCall) -> Snippet | str:
    """The script's NumPy part for ``call``, or why there is none."""
    if call.user is None or call.user.form != "cs231n":
        return "NumPy's reproducers are for the cs231n style only"
    if call.dtype not in NUMPY_DTYPES:
        return f"NumPy has no {call.dtype}"
    writer = WRITERS.get(call.op)
    if writer is None:
        return f"the cs231n style has no {call.op}"
    code, param, note = writer(call)
    header = HEADER.format(dtype=NUMPY_DTYPES[call.dtype], param=param, param_note=note)
    return Snippet((), header + code, 'f"numpy {np.__version__}"', ())


def _eps(call: ReproCall) -> dict[str, object]:
    """eps, unless the defaults are meant to apply."""
    return {} if call.user is not None and call.user.omit_defaults else {"eps": call.eps}


def _run(lines: list[str]) -> str:
    return "\n\ndef run(data):\n" + block([*lines, "return float64(out)"])


def _ones_or(key: str, given: bool, fill: str, shape: tuple[int, ...]) -> str:
    """``data[key]``, or ``fill`` (ones or zeros) of ``shape`` standing in for a parameter the case lacks."""
    return f'data["{key}"]' if given else f"np.{fill}({shape!r})"


# -- bn, ln, gn (forms.Cs231nImplementation) -------------------------------------------------


def _plain(call: ReproCall) -> Written:
    param = _eps(call)
    if call.op == "bn" and param:
        param["momentum"] = call.framework_momentum
    args = "x, gamma, beta, " + (f"{call.params.groups}, " if call.op == "gn" else "") + "param"
    code = FORWARD.format(call=f"IMPL({args})") + (BATCH_NORM if call.op == "bn" else "")
    note = " (eps, and batch norm's momentum as the weight of the old value)"
    return code + _run(_plain_lines(call)), param, note


def _plain_lines(call: ReproCall) -> list[str]:
    """Cs231nImplementation.run, affine and _add_grads."""
    p = call.params
    canonical = OPS[call.op].param_shape(call.shape, p)
    passed = broadcast_channels(len(call.shape), call.shape[1]) if call.op == "gn" else canonical
    weight = _ones_or("weight", p.affine, "ones", canonical)
    bias = _ones_or("bias", p.affine, "zeros", canonical)
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
    if p.running_stats and p.mode == "eval":  # the backward is defined for training mode only
        return lines
    grads = ['dx, dgamma, dbeta = BACKWARD(data["dy"].astype(DTYPE), cache)', 'out["grad_input"] = np.asarray(dx)']
    if p.affine:
        grads += [
            f'out["grad_weight"] = np.asarray(dgamma).reshape({canonical!r})',
            f'out["grad_bias"] = np.asarray(dbeta).reshape({canonical!r})',
        ]
    return lines + grads


# -- adaLN, the fused add + layer norm, Weight Standardization (variants.py's pairs) ----------


def _adaln(call: ReproCall) -> Written:
    """variants.AdaLNPair: dscale and dshift read as (N, D), (N, 1, D) accepted."""
    rows = (call.shape[0], call.shape[2])
    lines = [
        "# adaLN's shift is the case's bias, its scale the case's weight",
        'x, shift, scale, dout = copies(data["x"], data["bias"], data["weight"], data["dy"])',
        "y, cache = IMPL(x, shift, scale, dict(PARAM))",
        'out = {"forward": y}',
        "dx, dshift, dscale = BACKWARD(dout, cache)",
        "out.update(grad_input=dx)",
        f"out.update(grad_weight=np.reshape(dscale, {rows!r}), grad_bias=np.reshape(dshift, {rows!r}))",
    ]
    return _run(lines), _eps(call), " (eps; DiT's 1e-6 where left out)"


def _add_ln(call: ReproCall) -> Written:
    """variants.FusedAddPair: gamma ones and beta zeros where the case has none (their gradients
    then not read)."""
    pshape = call.param_shape
    gamma = _ones_or("weight", call.params.affine, "ones", pshape)
    beta = _ones_or("bias", call.has_bias, "zeros", pshape)
    grads = ["dx, dresidual, dgamma, dbeta = BACKWARD(dout, dresidual_out, cache)"]
    grads.append("out.update(grad_input=dx, grad_residual=dresidual)")
    if call.params.affine:
        grads.append(f'out["grad_weight"] = np.reshape(dgamma, {pshape!r})')
    if call.has_bias:
        grads.append(f'out["grad_bias"] = np.reshape(dbeta, {pshape!r})')
    lines = [
        "x, residual, gamma, beta, dout, dresidual_out = copies(",
        f'    data["x"], data["residual"], {gamma}, {beta}, data["dy"], data["dresidual"]',
        ")",
        "y, h, cache = IMPL(x, residual, gamma, beta, dict(PARAM))",
        'out = {"forward": y, "residual_out": h}',
        *grads,
    ]
    return _run(lines), _eps(call), " (eps)"


def _ws(call: ReproCall) -> Written:
    """variants.WSPair: b zeros where the case has no bias (db then not read)."""
    o, _, pad = conv_of(call.params)
    b = _ones_or("bias", call.has_bias, "zeros", (o,))
    code, between, after = _ws_group_norm(call)
    lines = [
        f'x, w, b, dout = copies(data["x"], data["weight"], {b}, data["dy"])',
        "y, cache = IMPL(x, w, b, dict(PARAM))",
        *between,
        "dx, dw, db = BACKWARD(upstream, cache)",
        "out.update(grad_input=dx, grad_weight=dw)",
    ]
    if call.has_bias:
        lines.append(f'out["grad_bias"] = np.reshape(db, ({o},))')
    return code + _run(lines + after), {"stride": 1, "pad": pad, **_eps(call)}, " (eps; stride and pad)"


def _ws_group_norm(call: ReproCall) -> tuple[str, list[str], list[str]]:
    """ws_gn's group norm after the convolution (variants.GroupNormAfter): its code, the lines
    from the convolution's output y to the gradient the backward is given (``upstream``), and the
    line adding its affine's gradients; for ws, y and dout as they are."""
    if call.op != WS_GN:
        return "", ['out = {"forward": y}', "upstream = dout"], []
    compute = "np.float32" if call.dtype == "float16" else NUMPY_DTYPES[call.dtype]
    affine = 'copies(data["gn_weight"], data["gn_bias"])' if call.params.affine else "None, None"
    between = [
        f"gn_weight, gn_bias = {affine}",
        "z, saved = group_norm_forward(y, gn_weight, gn_bias)",
        'out = {"forward": z}',
        "upstream, gn_grads = group_norm_backward(dout, saved)",
    ]
    return GROUP_NORM.format(groups=call.params.groups, eps=GN_EPS, compute=compute), between, ["out.update(gn_grads)"]


WRITERS: dict[str, Callable[[ReproCall], Written]] = {
    "bn": _plain,
    "ln": _plain,
    "gn": _plain,
    ADALN: _adaln,
    ADD_LN: _add_ln,
    WS: _ws,
    WS_GN: _ws,
}
