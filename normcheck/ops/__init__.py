"""Reference formulas: one generic normalization, five thin op definitions, no framework."""

from __future__ import annotations

from typing import Literal

from normcheck.ops import adaptive_layer_norm as _adaln
from normcheck.ops import batch_norm, fused_add, group_norm, instance_norm, layer_norm, rms_norm
from normcheck.ops import weight_standardization as _ws
from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import Op, OpParams, broadcast_channels, fmt_shape

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        batch_norm.OP,
        layer_norm.OP,
        instance_norm.OP,
        group_norm.OP,
        rms_norm.OP,
        fused_add.ADD_RMS,
        fused_add.ADD_LN,
        _ws.OP,
        _ws.OP_GN,
        _adaln.OP,
    )
}
# the norm each fused op applies to x + residual
FUSED_BASE: dict[str, Literal["rms", "ln"]] = {"add_rms": "rms", "add_ln": "ln"}

__all__ = ["FUSED_BASE", "OPS", "Grads", "Normalization", "Op", "OpParams", "broadcast_channels", "fmt_shape"]
