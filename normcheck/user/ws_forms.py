"""User Weight Standardization code (``--op ws``, ``ws_gn``): which forms run it, which parameters
its signature takes, and the eps each call style is held to. Imports no framework.

The PyTorch forms run it (normcheck.frameworks.torch.ws): an ``nn.Module`` subclass with
``nn.Conv2d``'s constructor (timm's and BiT's ``StdConv2d``), or ``fn(x, weight, bias, padding=,
eps=)``. The JAX function form calls a function the same way (normcheck.frameworks.jax.forms,
``WSFunction``), held to the same convention (timm's). The channels-last forms take their
framework's convolution layout: a TensorFlow function ``fn(x, filters, bias, padding=, eps=)`` on
NHWC x and an HWIO kernel, a Keras ``Conv2D`` or Flax ``nn.Conv`` subclass constructed as its base
is (normcheck.frameworks.tensorflow.ws, normcheck.frameworks.jax.forms). The CS231n style takes a
``conv_forward``/``conv_backward`` pair (normcheck.frameworks.numpy.forms).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from normcheck.conventions import Convention, Settings, settings
from normcheck.ops import OpParams
from normcheck.ops.weight_standardization import conv_of
from normcheck.user.binding import takes

WS_FORMS = ("torch_function", "torch_module", "jax_function", "flax_module", "tf_function", "keras_layer", "cs231n")
EPS_NAMES = ("eps", "epsilon")
PADDING_NAMES = ("padding", "pad")
NO_PADDING = "it takes no padding parameter: only the cases without padding run"
NO_EPS = "it takes no eps: its own is checked by the defaults call style (against --eps, default 1e-6)"


def ws_unsupported(obj: object, params: OpParams, omit_defaults: bool, padding: bool = True) -> str | None:
    """Why a case's call cannot be expressed in ``obj``'s signature (a skip row), or None: padding
    it takes no parameter for (``padding``: padding is given by keyword, not by a constructor of
    its own), an explicit eps it takes none for."""
    if padding and conv_of(params)[2] and takes(obj, PADDING_NAMES) is None:
        return NO_PADDING
    if not omit_defaults and takes(obj, EPS_NAMES) is None:
        return NO_EPS
    return None


def ws_keywords(obj: object, params: OpParams, eps: float, omit_defaults: bool, padding: bool = True) -> dict[str, Any]:
    """The keyword arguments a case gives ``obj``: its padding (``padding``) and, in the explicit
    call style, its eps, each by the name ``obj`` takes it under; left out where it takes none."""
    kwargs: dict[str, Any] = {}
    pad = takes(obj, PADDING_NAMES)
    if padding and pad is not None:
        kwargs[pad] = conv_of(params)[2]
    name = takes(obj, EPS_NAMES)
    if name is not None and not omit_defaults:
        kwargs[name] = eps
    return kwargs


def declared_eps(fn: Callable) -> float | None:
    """The default ``fn`` declares for its eps parameter, when that is a number."""
    name = takes(fn, EPS_NAMES)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if name is None or name not in params:
        return None
    default = params[name].default
    if isinstance(default, bool) or not isinstance(default, numbers.Real):
        return None
    return float(default)


def ws_settings(
    obj: object, conv: Convention, dtype: str, eps: float | None, explicit_eps: float, omit_defaults: bool
) -> Settings:
    """The eps a ws case of user code runs with. Explicit call style: ``eps`` (``--eps``), else
    ``explicit_eps`` (no framework's default). Defaults call style: the eps the code declares
    (timm's ``eps=1e-6``), else ``--eps``, else the convention's (timm's 1e-6): code that takes
    no eps (BiT's hard-coded 1e-10) is checked against ``--eps``."""
    if omit_defaults:
        declared = declared_eps(obj) if callable(obj) else None
        chosen = declared if declared is not None else eps
    else:
        chosen = eps if eps is not None else explicit_eps
    return replace(settings(conv, dtype, chosen, None), notes=())
