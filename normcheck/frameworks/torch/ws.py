"""Weight Standardization (``ws``, ``ws_gn``) written by the user in PyTorch (``--impl``).

PyTorch has none of its own (the adapter checks timm's composition, ``bind_ws``). User code is
- an ``nn.Module`` subclass, constructed as ``cls(in_channels, out_channels, kernel_size,
  padding=p, bias=..., eps=...)``: ``nn.Conv2d``'s signature as timm's and BiT's ``StdConv2d``
  keep it, plus timm's ``eps`` (given only when the constructor takes it); its ``weight`` (and
  ``bias``) are set to the case's, then ``m(x)``;
- a function ``fn(x, weight, bias, padding=p, eps=...)``: the tensors positionally (``bias`` None
  when the case has none), ``padding`` (or ``pad``) and ``eps`` (or ``epsilon``) by keyword when
  it takes them.
For ``ws_gn`` either is followed by normcheck's own ``F.group_norm`` with the case's affine: the
user's convolution checked inside GN+WS, the gradients reaching it through the group norm.

Code that takes no eps has its own: the call style that gives one explicitly is a skip row, the
defaults call style checks it against ``--eps`` (default: timm's 1e-6). Code that takes no
padding runs the cases without padding only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from normcheck.frameworks.torch.adapter import (
    TORCH_DTYPES,
    Binder,
    Bound,
    TorchImplementation,
    ieee_float32_convolutions,
    leaf,
    tensor,
    ws_group_norm,
)
from normcheck.ops.weight_standardization import PAPER, WEIGHT_STANDARDIZATION, conv_of
from normcheck.problem import Problem
from normcheck.user.ws_forms import ws_keywords, ws_unsupported

# user code computes whatever convention it follows: the paper's variant runs it too
USER_EXTENSIONS = frozenset({WEIGHT_STANDARDIZATION, PAPER})


class WSUserImplementation(TorchImplementation):
    """The user's module or function on ws cases: a skip row for a case its signature cannot
    express (an explicit eps it does not take, padding it does not take)."""

    def __init__(self, op: str, name: str, bind: Binder, obj: Callable, omit_defaults: bool, module: bool) -> None:
        super().__init__(op, name, bind, USER_EXTENSIONS)
        self.obj, self.omit_defaults, self.module = obj, omit_defaults, module

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        return ws_unsupported(self.obj, problem.params, self.omit_defaults, padding=not self.module)


def build(form: str, op: str, obj: object, name: str, omit_defaults: bool) -> TorchImplementation:
    """The user's ws implementation in ``form`` (torch_module or torch_function)."""
    if form == "torch_module":
        if not isinstance(obj, type):
            raise TypeError(f"the torch_module form takes an nn.Module subclass, not a {type(obj).__name__}")
        return WSUserImplementation(op, name, _module_binder(obj, omit_defaults), obj, omit_defaults, True)
    if not callable(obj):
        raise TypeError(f"the torch_function form takes a function, not a {type(obj).__name__}")
    return WSUserImplementation(op, name, _function_binder(obj, omit_defaults), obj, omit_defaults, False)


def _function_binder(fn: Callable, omit_defaults: bool) -> Binder:
    def bind(p: Problem, device: str) -> Bound:
        ieee_float32_convolutions(device)
        w, b = leaf(p.weight, p, device), leaf(p.bias, p, device)
        norm, extra = ws_group_norm(p, device)
        kwargs = ws_keywords(fn, p.params, p.eps, omit_defaults)

        def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
            return norm(fn(x, w, b, **kwargs))

        return Bound(forward, w, b, extra=extra)

    return bind


def _module_binder(cls: type, omit_defaults: bool) -> Binder:
    owner = getattr(cls, "__name__", str(cls))

    def bind(p: Problem, device: str) -> Bound:
        ieee_float32_convolutions(device)
        o, k, padding = conv_of(p.params)
        eps = ws_keywords(cls, p.params, p.eps, omit_defaults, padding=False)  # padding is the constructor's own
        m = cls(p.shape[1], o, k, padding=padding, bias=p.bias is not None, **eps)
        if not isinstance(m, nn.Module):
            raise TypeError(f"{owner}(...) returned a {type(m).__name__}, not an nn.Module")
        m = m.to(device=device, dtype=TORCH_DTYPES[p.dtype])
        weight = _parameter(m, owner, "weight", p.weight, p, device)
        bias = _parameter(m, owner, "bias", p.bias, p, device)
        if p.bias is None and isinstance(getattr(m, "bias", None), torch.Tensor):
            raise ValueError(f"{owner}(..., bias=False) still has a bias")
        norm, extra = ws_group_norm(p, device)

        def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
            return norm(m.train(train)(x))

        return Bound(forward, weight, bias, extra=extra)

    return bind


def _parameter(
    m: nn.Module, owner: str, attr: str, value: np.ndarray | None, p: Problem, device: str
) -> torch.Tensor | None:
    """The module's ``attr`` parameter set to the case's ``value`` (None: the case has none)."""
    if value is None:
        return None
    t = getattr(m, attr, None)
    if not isinstance(t, torch.Tensor):
        raise AttributeError(f"{owner} has no parameter {attr!r} for the case's {attr} of shape {value.shape}")
    if tuple(t.shape) != value.shape:
        raise ValueError(f"{owner}.{attr} has shape {tuple(t.shape)}; the case's {attr} has shape {value.shape}")
    if not t.requires_grad:
        raise ValueError(f"{owner}.{attr} does not require grad: make it an nn.Parameter")
    with torch.no_grad():
        t.copy_(tensor(value, p.dtype, device))
    return t


__all__ = ["USER_EXTENSIONS", "build"]
