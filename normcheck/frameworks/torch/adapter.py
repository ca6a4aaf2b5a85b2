"""PyTorch: the torch.nn.functional ops and the torch.nn layer classes, CPU and CUDA."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.frameworks.torch.facts import FUNCTIONAL_NAMES, KNOWN_ISSUES, MODULE_NAMES, TORCH
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout
from normcheck.ops import OpParams
from normcheck.ops._op import required
from normcheck.ops.batch_norm import CUMULATIVE
from normcheck.ops.layer_norm import NOBIAS
from normcheck.ops.rms_norm import default_eps as rms_default_eps
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


Binder = Callable[[Problem, str], Bound]


class TorchImplementation(Implementation):
    """An op called through a ``bind(problem, device) -> Bound``: the case's forward with the tensors
    it owns, which ``run`` trains, runs and differentiates, and the bench module times."""

    framework = "torch"

    def __init__(self, op: str, name: str, bind: Binder, extensions: frozenset[str] = frozenset()) -> None:
        self.op, self.name, self.bind = op, name, bind
        self.extensions = extensions

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return (CONTIGUOUS, CHANNELS_LAST) if len(shape) in MEMORY_FORMATS else (CONTIGUOUS,)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        return group_norm_refused(problem) if self.bind in (bind_functional, bind_module) else None

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        try:
            return self._run(problem, layout, device)
        except RuntimeError as e:
            if "not implemented for" in str(e):
                raise Unsupported(str(e).splitlines()[0]) from e
            raise

    def _run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        bound = self.bind(problem, device)
        if bound.fused is not None:
            return _run_fused(bound, bound.fused, problem, layout, device)
        params = problem.params
        with torch.no_grad():
            for batch in problem.steps:
                bound.forward(tensor(batch, problem.dtype, device, layout), True)
        x = tensor(problem.x, problem.dtype, device, layout).requires_grad_(True)
        training = params.mode == "train" or not params.running_stats
        y = bound.forward(x, training)
        y.backward(tensor(problem.dy, problem.dtype, device, layout))
        out = RunOutput()
        add(out, "forward", y)
        add(out, "grad_input", x.grad)
        if bound.weight is not None:
            add(out, "grad_weight", bound.weight.grad)
        if bound.bias is not None:
            add(out, "grad_bias", bound.bias.grad)
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
    grads = [tensor(problem.dy, problem.dtype, device, layout), tensor(dresidual, problem.dtype, device, layout)]
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


def group_norm_refused(problem: Problem) -> str | None:
    """F.group_norm (and nn.GroupNorm) apply batch norm's check to their (N*C/G, G, *spatial) view,
    so they raise on N = 1, C/G = 1 and no spatial extent, though each group (one value) is defined."""
    if problem.op != "gn" or problem.params.groups is None or not problem.x.size:
        return None
    shape = problem.shape
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
    return t


def add(out: RunOutput, check: str, t: torch.Tensor | None) -> None:
    if t is None:
        raise RuntimeError(f"no {check.replace('_', ' ')} was produced")
    out.add(check, t.detach().to("cpu", torch.float64).numpy(), str(t.dtype).removeprefix("torch."))


# -- torch.nn.functional ------------------------------------------------------------


def leaf(a: np.ndarray | None, p: Problem, device: str) -> torch.Tensor | None:
    """A weight or bias of the case as a tensor that collects its gradient (None stays None)."""
    return None if a is None else tensor(a, p.dtype, device).requires_grad_(True)


def running_stats(p: Problem, device: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The case's initial running mean and variance, fresh tensors to update in place (None: untracked)."""
    if not p.params.running_stats:
        return None, None
    running_mean, running_var = p.initial_running()
    return tensor(running_mean, p.dtype, device), tensor(running_var, p.dtype, device)


def _rms_eps(p: Problem) -> float | None:
    """None (PyTorch's own default) whenever the case uses that default."""
    return None if p.eps == rms_default_eps(p.dtype) else p.eps


def bind_functional(p: Problem, device: str) -> Bound:
    w, b = leaf(p.weight, p, device), leaf(p.bias, p, device)
    rm, rv = running_stats(p, device)
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
    normalized_shape = p.shape[len(p.shape) - required(params.normalized_ndim, "normalized_ndim") :]
    if p.op == "ln":
        return nn.LayerNorm(normalized_shape, eps=p.eps, elementwise_affine=params.affine, bias=p.bias is not None)
    return nn.RMSNorm(normalized_shape, eps=_rms_eps(p), elementwise_affine=params.affine)


def bind_module(p: Problem, device: str) -> Bound:
    m = _layer(p).to(device=device, dtype=TORCH_DTYPES[p.dtype])
    with torch.no_grad():
        for name, value in (("weight", p.weight), ("bias", p.bias)):
            if value is not None:
                getattr(m, name).copy_(tensor(value, p.dtype, device))
        for name, stat in zip(("running_mean", "running_var"), running_stats(p, device), strict=True):
            if stat is not None:  # the case's own starting point, not the module's zeros and ones
                getattr(m, name).copy_(stat)

    def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
        return m.train(train)(x)

    return Bound(
        forward,
        weight=getattr(m, "weight", None),
        bias=getattr(m, "bias", None),
        running_mean=getattr(m, "running_mean", None),
        running_var=getattr(m, "running_var", None),
    )


class TorchFramework(Framework):
    name = "torch"
    conventions = TORCH
    known_issues = KNOWN_ISSUES

    def implementations(self, op: str) -> list[Implementation]:
        if op not in FUNCTIONAL_NAMES:  # torch has no fused add + norm (nor Gemma's RMS norm) built in
            return []
        extensions = BUILT_IN_VARIANTS.get(op, frozenset())
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
