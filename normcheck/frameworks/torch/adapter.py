"""PyTorch: the torch.nn.functional ops and the torch.nn layer classes, CPU and CUDA."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.frameworks.torch.facts import (
    ADALN_NAME,
    FUNCTIONAL_NAMES,
    KNOWN_ISSUES,
    MODULE_NAMES,
    TORCH,
    WS_NAMES,
)
from normcheck.frameworks.torch.layouts import (
    VIEW_LAYOUTS,
    GradientFormat,
    gradient_layout,
    memory_format,
    strided_view,
)
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, IN_PLACE, Layout
from normcheck.ops import OpParams
from normcheck.ops._op import required
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.batch_norm import CUMULATIVE
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.ops.rms_norm import default_eps as rms_default_eps
from normcheck.ops.weight_standardization import GN_EPS, WEIGHT_STANDARDIZATION, WS_GN, WS_OPS, conv_of, output_shape
from normcheck.problem import Problem

TORCH_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
MEMORY_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}
# the op variants torch's own functions and layers compute: F.layer_norm(bias=None) and
# nn.LayerNorm(bias=False); no Gemma RMS norm and no fused add + norm (user code covers those)
BUILT_IN_VARIANTS = {"ln": frozenset({NOBIAS})}
# ... and those of the layers alone: nn.BatchNormNd(momentum=None) keeps the cumulative average
# (num_batches_tracked counts the batches); F.batch_norm takes a number only
MODULE_VARIANTS = {"bn": frozenset({CUMULATIVE})}


@dataclass
class Bound:
    """An op made ready for one case: a forward callable and the tensors it owns."""

    forward: Callable[[torch.Tensor, bool], torch.Tensor]
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    running_mean: torch.Tensor | None = None
    running_var: torch.Tensor | None = None
    # a fused add + norm: (x, residual) -> (normalized output, updated residual); forward unused
    fused: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    # an FP8-quantized norm (OpParams.quant): x -> its outputs (normcheck.frameworks.torch.quantized);
    # quantized_call: x -> what the code returns, (q, scale) or q, which bench times; forward unused
    quantized: Callable[[torch.Tensor], RunOutput] | None = None
    quantized_call: Callable[[torch.Tensor], object] | None = None
    # more leaves whose gradients are checks, by check name (ws_gn's group norm affine)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


Binder = Callable[[Problem, str], Bound]


class TorchImplementation(Implementation):
    """An op called through a ``bind(problem, device) -> Bound``: the case's forward with the tensors
    it owns, which ``run`` trains, runs and differentiates, and the bench module times."""

    framework = "torch"

    def __init__(
        self, op: str, name: str, bind: Binder, extensions: frozenset[str] = frozenset(), in_place: bool = False
    ) -> None:
        self.op, self.name, self.bind = op, name, bind
        self.extensions = extensions
        self.in_place = in_place  # also called in place (the stress profile's in_place layout): user functions

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return (CONTIGUOUS, CHANNELS_LAST) if len(shape) in MEMORY_FORMATS else (CONTIGUOUS,)

    def stress_layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return VIEW_LAYOUTS + ((IN_PLACE,) if self.in_place else ())

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        return group_norm_refused(problem) if self.bind in (bind_functional, bind_module, bind_ws) else None

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        try:
            return self._run(problem, layout, device)
        except RuntimeError as e:
            if "not implemented for" in str(e):
                raise Unsupported(str(e).splitlines()[0]) from e
            raise

    def _run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        bound = self.bind(problem, device)
        if bound.quantized is not None:  # inference: no gradient, no training step
            with torch.no_grad():
                return bound.quantized(tensor(problem.x, problem.dtype, device, layout))
        if layout == IN_PLACE:
            return _run_in_place(bound, problem, device)
        if bound.fused is not None:
            return _run_fused(bound, bound.fused, problem, layout, device)
        params = problem.params
        with torch.no_grad():
            for batch in problem.steps:
                bound.forward(tensor(batch, problem.dtype, device, layout), True)
        x = tensor(problem.x, problem.dtype, device, layout).requires_grad_(True)
        dx_format = GradientFormat(x) if layout == CHANNELS_LAST else None
        training = params.mode == "train" or not params.running_stats
        y = bound.forward(x, training)
        y.backward(tensor(problem.dy, problem.dtype, device, gradient_layout(layout)))
        out = RunOutput()
        if dx_format is not None:  # the formats the results came in (the stress profile's memory_format check)
            out.memory_formats = {"forward": memory_format(y), "grad_input": dx_format.format or "none"}
        add(out, "forward", y)
        add(out, "grad_input", x.grad)
        if bound.weight is not None:
            add(out, "grad_weight", bound.weight.grad)
        if bound.bias is not None:
            add(out, "grad_bias", bound.bias.grad)
        for check, leaf_ in bound.extra.items():
            add(out, check, leaf_.grad)
        if params.running_stats:
            add(out, "running_mean", bound.running_mean)
            add(out, "running_var", bound.running_var)
        return out


def _run_fused(
    bound: Bound,
    fused: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    problem: Problem,
    layout: str,
    device: str,
) -> RunOutput:
    """A fused add + norm: both outputs, and the gradients of x and residual for the upstream
    gradients of both (dy for the normalized output, dresidual for the updated residual)."""
    residual, dresidual = problem.fused_inputs()
    x = tensor(problem.x, problem.dtype, device, layout).requires_grad_(True)
    r = tensor(residual, problem.dtype, device, layout).requires_grad_(True)
    result = fused(x, r)
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise TypeError("a fused add + norm returns (output, residual_out), two tensors")
    y, h = result
    grad_layout = gradient_layout(layout)
    grads = [
        tensor(problem.dy, problem.dtype, device, grad_layout),
        tensor(dresidual, problem.dtype, device, grad_layout),
    ]
    outputs = [(t, g) for t, g in zip((y, h), grads, strict=True) if t.requires_grad]
    torch.autograd.backward([t for t, _ in outputs], [g for _, g in outputs])
    out = RunOutput()
    add(out, "forward", y)
    add(out, "residual_out", h)
    add(out, "grad_input", x.grad)
    add(out, "grad_residual", r.grad)
    if bound.weight is not None:
        add(out, "grad_weight", bound.weight.grad)
    if bound.bias is not None:
        add(out, "grad_bias", bound.bias.grad)
    return out


# an in-place call's checks that need autograd, and why they are skipped
IN_PLACE_GRADS = ("grad_input", "grad_residual", "grad_weight", "grad_bias")
IN_PLACE_NO_GRADS = (
    "an in-place call is checked forward only: it runs under torch.no_grad(), since autograd refuses a "
    "write into a leaf that requires grad (the other layouts check the gradients)"
)


def _run_in_place(bound: Bound, problem: Problem, device: str) -> RunOutput:
    """The op called without autograd on fresh input tensors it may overwrite: its results are what
    it returns, or where it returns None its input tensors after the call (vLLM's
    ``fused_add_rms_norm(x, residual, weight, eps)`` writes the output into x and x + residual into
    residual, and returns nothing). A function that returns new tensors and also overwrote an
    input clobbers its caller's tensor: an error."""
    out = RunOutput(skipped=dict.fromkeys(IN_PLACE_GRADS, IN_PLACE_NO_GRADS))
    params = problem.params
    with torch.no_grad():
        inputs = {"x": tensor(problem.x, problem.dtype, device)}
        if bound.fused is not None:
            inputs["residual"] = tensor(problem.fused_inputs()[0], problem.dtype, device)
        before = {name: t.clone() for name, t in inputs.items()}
        if bound.fused is not None:
            result = bound.fused(inputs["x"], inputs["residual"])
            if result is not None and (not isinstance(result, tuple | list) or len(result) != 2):
                raise TypeError("a fused add + norm returns (output, residual_out), two tensors, or None in place")
            results = dict(zip(("forward", "residual_out"), result or inputs.values(), strict=True))
        else:
            for batch in problem.steps:
                bound.forward(tensor(batch, problem.dtype, device), True)
            y = bound.forward(inputs["x"], params.mode == "train" or not params.running_stats)
            results = {"forward": inputs["x"] if y is None else y}
    _refuse_clobbering(inputs, before, results)
    for check, t in results.items():
        add(out, check, t)
    if params.running_stats:
        add(out, "running_mean", bound.running_mean)
        add(out, "running_var", bound.running_var)
    return out


def _refuse_clobbering(
    inputs: dict[str, torch.Tensor], before: dict[str, torch.Tensor], results: dict[str, torch.Tensor]
) -> None:
    """An input overwritten while every result is a tensor of its own: the caller's tensor lost."""
    own = {r.untyped_storage().data_ptr() for r in results.values() if isinstance(r, torch.Tensor)}
    for name, t in inputs.items():
        if t.untyped_storage().data_ptr() not in own and not torch.equal(t, before[name]):
            raise ValueError(
                f"it overwrote its input {name} but returned tensors of its own: an in-place kernel returns "
                "None or its inputs, an out-of-place one leaves them alone"
            )


def group_norm_refused(problem: Problem) -> str | None:
    """F.group_norm (and nn.GroupNorm) apply batch norm's check to their (N*C/G, G, *spatial) view,
    so they raise on N = 1, C/G = 1 and no spatial extent, though each group (one value) is defined."""
    if problem.op not in ("gn", WS_GN) or problem.params.groups is None or not problem.x.size:
        return None
    shape = output_shape(problem.shape, problem.params) if problem.op == WS_GN else problem.shape  # conv's output
    if shape[0] * (shape[1] // problem.params.groups) * int(np.prod(shape[2:], dtype=np.int64)) != 1:
        return None
    return (
        "PyTorch refuses group norm with one value per group and a batch of 1 (Expected more than 1 value per channel)"
    )


def tensor(a: np.ndarray, dtype: str, device: str, layout: str = CONTIGUOUS) -> torch.Tensor:
    # torch.tensor copies: from_numpy would share memory, and in-place updates (running
    # statistics) would write into the problem every implementation shares
    t = torch.tensor(np.asarray(a, dtype=np.float64)).to(device=device, dtype=TORCH_DTYPES[dtype])
    if layout == CHANNELS_LAST:
        t = t.contiguous(memory_format=MEMORY_FORMATS[t.ndim])
    elif layout in VIEW_LAYOUTS:  # the stress profile's strided views of the same values
        t = strided_view(t, layout)
    return t


def add(out: RunOutput, check: str, t: torch.Tensor | None) -> None:
    if t is None:
        raise RuntimeError(f"no {check.replace('_', ' ')} was produced")
    out.add(check, t.detach().to("cpu", torch.float64).numpy(), str(t.dtype).removeprefix("torch."))


# -- torch.nn.functional ------------------------------------------------------------


def leaf(a: np.ndarray | None, p: Problem, device: str, dtype: str | None = None) -> torch.Tensor | None:
    """A weight or bias of the case as a tensor that collects its gradient (None stays None), in
    the case's dtype unless ``dtype`` names another (``weight_dtype``)."""
    return None if a is None else tensor(a, dtype or p.dtype, device).requires_grad_(True)


def weight_dtype(p: Problem) -> str:
    """The dtype the case's weight is stored in: the input's, or a precision policy's float32
    (``OpParams.weight_dtype``, normcheck.policies), as a model keeping float32 master weights."""
    return p.params.weight_dtype or p.dtype


def running_stats(p: Problem, device: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The case's initial running mean and variance, fresh tensors to update in place (None: untracked)."""
    if not p.params.running_stats:
        return None, None
    running_mean, running_var = p.initial_running()
    return tensor(running_mean, p.dtype, device), tensor(running_var, p.dtype, device)


def _rms_eps(p: Problem) -> float | None:
    """None (PyTorch's own default) whenever the case uses that default."""
    return None if p.eps == rms_default_eps(p.dtype) else p.eps


def around_axes(
    fn: Callable[[torch.Tensor], torch.Tensor], axes: tuple[int, ...]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn``, a layer norm over the trailing len(axes) dims, applied over ``axes`` instead: the
    other axes moved first, ``axes`` last in order, and back after (ConvNeXt's and timm's
    LayerNorm2d: permute, F.layer_norm, permute back)."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        perm = [a for a in range(x.ndim) if a not in axes] + list(axes)
        back = [perm.index(a) for a in range(x.ndim)]
        return fn(x.permute(*perm)).permute(*back)

    return apply


def bind_functional(p: Problem, device: str) -> Bound:
    w, b = leaf(p.weight, p, device, weight_dtype(p)), leaf(p.bias, p, device)
    rm, rv = running_stats(p, device)
    axes = p.params.axes
    if p.op == "ln" and axes is not None:  # no F.layer_norm over other axes: permute around it
        sizes = [p.shape[a] for a in axes]
        over = around_axes(lambda v: F.layer_norm(v, sizes, w, b, eps=p.eps), axes)
        return Bound(lambda x, train: over(x), w, b)
    k = p.params.normalized_ndim
    forwards = {
        "bn": lambda x, train: F.batch_norm(x, rm, rv, w, b, training=train, momentum=p.momentum, eps=p.eps),
        "in": lambda x, train: F.instance_norm(x, rm, rv, w, b, use_input_stats=train, momentum=p.momentum, eps=p.eps),
        "ln": lambda x, train: F.layer_norm(x, x.shape[x.ndim - k :], w, b, eps=p.eps),
        "gn": lambda x, train: F.group_norm(x, required(p.params.groups, "groups"), w, b, eps=p.eps),
        "rms": lambda x, train: F.rms_norm(x, x.shape[x.ndim - k :], w, eps=_rms_eps(p)),
    }
    return Bound(forwards[p.op], w, b, rm, rv)


# -- torch.nn layers ------------------------------------------------------------


def _layer(p: Problem) -> nn.Module:
    c = p.shape[1] if len(p.shape) > 1 else None
    params: OpParams = p.params
    nd = {2: 1, 3: 1, 4: 2, 5: 3}.get(len(p.shape))
    if p.op == "bn":
        cls = getattr(nn, f"BatchNorm{nd}d")
        momentum = None if params.variant == CUMULATIVE else p.momentum  # None: the cumulative average
        return cls(c, eps=p.eps, momentum=momentum, affine=params.affine, track_running_stats=True)
    if p.op == "in":
        cls = getattr(nn, f"InstanceNorm{nd}d")
        return cls(c, eps=p.eps, momentum=p.momentum, affine=params.affine, track_running_stats=params.running_stats)
    if p.op == "gn":
        return nn.GroupNorm(params.groups, c, eps=p.eps, affine=params.affine)
    if params.axes is not None:
        normalized_shape = tuple(p.shape[a] for a in params.axes)
    else:
        normalized_shape = p.shape[len(p.shape) - required(params.normalized_ndim, "normalized_ndim") :]
    if p.op == "ln":
        return nn.LayerNorm(normalized_shape, eps=p.eps, elementwise_affine=params.affine, bias=p.bias is not None)
    return nn.RMSNorm(normalized_shape, eps=_rms_eps(p), elementwise_affine=params.affine)


def bind_module(p: Problem, device: str) -> Bound:
    m = _layer(p).to(device=device, dtype=TORCH_DTYPES[weight_dtype(p)])
    with torch.no_grad():
        for name, value in (("weight", p.weight), ("bias", p.bias)):
            if value is not None:
                getattr(m, name).copy_(tensor(value, p.dtype, device))
        for name, stat in zip(("running_mean", "running_var"), running_stats(p, device), strict=True):
            if stat is not None:  # the case's own starting point, not the module's zeros and ones
                getattr(m, name).copy_(stat)

    axes = p.params.axes

    def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
        if axes is not None:  # nn.LayerNorm over other axes: permute around it
            return around_axes(m.train(train), axes)(x)
        return m.train(train)(x)

    return Bound(
        forward,
        weight=getattr(m, "weight", None),
        bias=getattr(m, "bias", None),
        running_mean=getattr(m, "running_mean", None),
        running_var=getattr(m, "running_var", None),
    )


def bind_adaln(p: Problem, device: str) -> Bound:
    """DiT's adaLN written with torch ops: ``modulate(norm(x), shift, scale)`` with norm
    ``nn.LayerNorm(D, elementwise_affine=False)`` (here F.layer_norm without weight and bias) and
    ``modulate(x, shift, scale) = x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)``."""
    scale, shift = leaf(p.weight, p, device), leaf(p.bias, p, device)
    if scale is None or shift is None:
        raise ValueError("an adaptive layer norm case has a shift and a scale")
    width = p.shape[-1]

    def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
        return F.layer_norm(x, (width,), eps=p.eps) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    return Bound(forward, scale, shift)


def ieee_float32_convolutions(device: str) -> None:
    """float32 convolutions computed in float32 on CUDA: cuDNN's default (``fp32_precision``
    "tf32") rounds their operands to 10 mantissa bits. Set by a Weight Standardization case and
    kept by the worker for its later ones: normcheck checks float32 as float32."""
    if device.startswith("cuda"):
        torch.backends.cudnn.conv.fp32_precision = "ieee"


def ws_group_norm(p: Problem, device: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]:
    """ws_gn's F.group_norm after the convolution (the identity for ws), and its affine leaves
    by check name."""
    if p.op != WS_GN:
        return (lambda y: y), {}
    gw, gb = leaf(p.gn_weight, p, device), leaf(p.gn_bias, p, device)
    groups = required(p.params.groups, "groups")
    extra = {k: t for k, t in (("grad_gn_weight", gw), ("grad_gn_bias", gb)) if t is not None}
    return (lambda y: F.group_norm(y, groups, gw, gb, eps=GN_EPS)), extra


def bind_ws(p: Problem, device: str) -> Bound:
    """Weight Standardization as timm's StdConv2d writes it (PyTorch has none of its own): the
    weight through ``F.batch_norm`` viewed as (1, O, I*kh*kw), then ``F.conv2d``; for ws_gn
    ``F.group_norm`` after it."""
    ieee_float32_convolutions(device)
    w, b = leaf(p.weight, p, device), leaf(p.bias, p, device)
    if w is None:
        raise ValueError("a weight-standardization case has a weight")
    o, _, padding = conv_of(p.params)
    norm, extra = ws_group_norm(p, device)

    def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
        what = F.batch_norm(w.reshape(1, o, -1), None, None, training=True, momentum=0.0, eps=p.eps)
        return norm(F.conv2d(x, what.reshape_as(w), b, padding=padding))

    return Bound(forward, w, b, extra=extra)


class TorchFramework(Framework):
    name = "torch"
    conventions = TORCH
    known_issues = KNOWN_ISSUES

    def implementations(self, op: str) -> list[Implementation]:
        if op in WS_OPS:  # no Weight Standardization built in: timm's composition of torch ops
            return [TorchImplementation(op, WS_NAMES[op], bind_ws, frozenset({WEIGHT_STANDARDIZATION}))]
        if op == ADALN:  # no adaLN built in: DiT's own composition of torch ops
            return [TorchImplementation(op, ADALN_NAME, bind_adaln)]
        if op not in FUNCTIONAL_NAMES:  # torch has no fused add + norm (nor Gemma's RMS norm) built in
            return []
        # layer norm over other axes than the trailing ones: permuted around F.layer_norm / nn.LayerNorm
        extensions = BUILT_IN_VARIANTS.get(op, frozenset()) | ({AXES} if op == "ln" else frozenset())
        return [
            TorchImplementation(op, FUNCTIONAL_NAMES[op], bind_functional, extensions),
            TorchImplementation(op, MODULE_NAMES[op], bind_module, extensions | MODULE_VARIANTS.get(op, frozenset())),
        ]

    def device_problem(self, device: str) -> str | None:
        return device_problem(device)


def device_problem(device: str) -> str | None:
    """Why torch cannot run on ``device`` here, or None."""
    if device == "cpu":
        return None
    if device.startswith("cuda"):
        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    return f"unknown device {device!r}"


def framework() -> Framework:
    return TorchFramework()
