"""User-written layers that look like normalization layers: listed as candidates, unconfirmed.

A class whose name contains "norm" (LlamaRMSNorm, LayerNorm2d, FrozenBatchNorm2d, ...) and that
is not one of its framework's own layers is a candidate. What it computes is not known until it
is probed (a later part of ``normcheck model``); its record carries what its attributes say:
eps (``eps``, ``variance_epsilon``, ``epsilon``, ...) and its weight and bias.
"""

from __future__ import annotations

import math
from typing import Any

from normcheck.model.records import CANDIDATE, NormLayer, ParamSummary
from normcheck.names import OpName
from normcheck.user import guess_op

EPS_ATTRIBUTES = ("eps", "variance_epsilon", "epsilon", "variance_eps", "norm_eps", "layer_norm_eps", "rms_norm_eps")
# a candidate's own parameters, by name: the role each plays
PARAM_NAMES = {
    "weight": "weight",
    "scale": "weight",
    "gamma": "weight",
    "bias": "bias",
    "beta": "bias",
    "shift": "bias",
    "running_mean": "running_mean",
    "moving_mean": "running_mean",
    "running_var": "running_var",
    "moving_variance": "running_var",
}


def looks_like_norm(class_name: str) -> bool:
    return "norm" in class_name.lower()


def guess(class_name: str) -> OpName | None:
    """The op a class name suggests (LlamaRMSNorm → rms, LayerNorm2d → ln), when one does."""
    return guess_op(class_name, plain=True)


def eps_attribute(obj: Any) -> float | None:
    """The first numeric eps-like attribute of ``obj``; properties that raise count as absent."""
    for name in EPS_ATTRIBUTES:
        try:
            value = getattr(obj, name)
        except Exception:
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            return float(value)
    return None


def candidate(
    path: str,
    kind: str,
    framework: str,
    class_name: str,
    eps: float | None,
    params: tuple[ParamSummary, ...],
    notes: tuple[str, ...] = (),
) -> NormLayer:
    roles = {p.role for p in params}
    return NormLayer(
        path=path,
        op=guess(class_name),
        kind=kind,
        framework=framework,
        confirmed=False,
        basis=CANDIDATE,
        eps=eps,
        weight="weight" in roles,
        bias="bias" in roles,
        running_stats=True if "running_mean" in roles else None,
        dtype=next((p.dtype for p in params if p.role == "weight"), params[0].dtype if params else None),
        params=params,
        notes=notes,
    )
