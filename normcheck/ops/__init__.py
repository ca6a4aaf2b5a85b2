"""Reference formulas: one generic normalization, five thin op definitions, no framework."""

from __future__ import annotations

from normcheck.ops import batch_norm, group_norm, instance_norm, layer_norm, rms_norm
from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import Op, OpParams, broadcast_channels, fmt_shape

OPS: dict[str, Op] = {
    op.name: op for op in (batch_norm.OP, layer_norm.OP, instance_norm.OP, group_norm.OP, rms_norm.OP)
}

__all__ = ["OPS", "Grads", "Normalization", "Op", "OpParams", "broadcast_channels", "fmt_shape"]
