"""What an implementation must declare (``Implementation.extensions``) to run a case: the case's
op variant, the fused residual add, an FP8-quantized output, Weight Standardization. Imports
nothing above normcheck.ops."""

from __future__ import annotations

from normcheck.ops import FUSED_BASE, OpParams
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.quantize import QUANTIZED
from normcheck.ops.weight_standardization import WEIGHT_STANDARDIZATION, WS_OPS


def needed_extensions(op: str, params: OpParams) -> list[str]:
    """The extensions a case of ``op`` with ``params`` needs, in a fixed order."""
    needed = [params.variant] if params.variant is not None else []
    if op in FUSED_BASE:
        needed.append(FUSED_ADD)
    if params.quant is not None:
        needed.append(QUANTIZED)
    if op in WS_OPS:
        needed.append(WEIGHT_STANDARDIZATION)
    return needed
