"""The bytes a call must move at least, and the bandwidths it is measured against.

Model bytes (X: the input's bytes; P: the bytes of weight and bias; C: channels):
    forward   2·X + P                 read x, write y, read weight and bias
              + 4·C·itemsize          batch norm in training: read and write running mean and var
    backward  3·X + P + W             read x and dy, write dx, read weight, write dweight and dbias
                                      (W: the weight's bytes; P is their sum)
Fused residual add + norm (add_rms, add_ln) reads x and the residual and writes y and x + residual:
    forward   4·X + P                 backward 4·X + P + W (read x + residual, dy and the residual's
                                      gradient; write one gradient, dx = dresidual)
adaLN's weight and bias are its per-sample scale and shift, (N, D) each. An FP8-quantized output
(forward only) writes one byte an element and its float32 scales: X + X/itemsize + P + 4·scales.
Weight Standardization (ws, ws_gn) is a convolution: x read, y written (Y: its bytes), the raw
weight read (and its gradient written): forward X + Y + P, backward 2·X + Y + P + W; a convolution
is bound by arithmetic, not bandwidth, so its GB/s only says how far it is from memory's limit.
Per-group statistics (2 values per normalized group) are left out: they are far below 1% of X
for every default shape. GB/s = model bytes / median time, so a kernel that reads x twice still
counts it once: the figure is how close the op comes to the one-pass limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from normcheck.bench.records import FORWARD
from normcheck.ops import FUSED_BASE, OPS, OpParams
from normcheck.ops.quantize import ROW
from normcheck.ops.weight_standardization import WS_OPS

ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
FORMULA = {
    "forward": "2·X + weight + bias (+ 4·C for batch-norm running statistics; fused add + norm: 4·X + "
    "weight + bias; FP8 output: X + X/itemsize + weight + bias + scales; ws: X + Y + weight + bias)",
    "backward": "3·X + 2·weight + bias (fused add + norm: 4·X + 2·weight + bias; ws: 2·X + Y + 2·weight + bias)",
}
COPY_BYTES = 256 * 2**20  # bigger than any CPU's last-level cache and any GPU's L2


@dataclass(frozen=True)
class ModelBytes:
    x: int
    params: int
    state: int
    total: int


def model_bytes(op: str, shape: tuple[int, ...], params: OpParams, dtype: str, pass_: str) -> ModelBytes:
    size = ITEMSIZE[dtype]
    x = math.prod(shape) * size
    spec = OPS[op]
    weight = math.prod(spec.param_shape(shape, params)) * size if params.affine else 0
    bias = weight if spec.has_bias(params) and params.affine else 0
    if op in WS_OPS:
        return _conv_bytes(op, shape, params, size, x, pass_)
    forward = pass_ == FORWARD
    if op in FUSED_BASE:  # x and the residual in, y and x + residual out
        total = 4 * x + weight + bias if forward else 4 * x + 2 * weight + bias
        return ModelBytes(x, weight + bias if forward else 2 * weight + bias, 0, total)
    if params.quant is not None:  # one byte an element out, and the float32 scales
        rows = math.prod(shape[: len(shape) - (params.normalized_ndim or 1)])
        scales = 4 * (rows if params.quant.scale == ROW else 1)
        return ModelBytes(x, weight + bias, scales, x + math.prod(shape) + weight + bias + scales)
    if forward:
        state = 4 * shape[1] * size if params.running_stats and params.mode == "train" else 0
        return ModelBytes(x, weight + bias, state, 2 * x + weight + bias + state)
    return ModelBytes(x, 2 * weight + bias, 0, 3 * x + 2 * weight + bias)


def _conv_bytes(op: str, shape: tuple[int, ...], params: OpParams, size: int, x: int, pass_: str) -> ModelBytes:
    """Weight Standardization's convolution: x and the raw (O, C, k, k) weight read, y written; its
    bias (ws) or the group norm's weight and bias (ws_gn), O values each, read."""
    from normcheck.ops.weight_standardization import WS_GN, output_shape, weight_shape

    y = math.prod(output_shape(shape, params)) * size
    weight = math.prod(weight_shape(shape, params)) * size
    o = output_shape(shape, params)[1] * size
    others = 2 * o if op == WS_GN and params.affine else (o if params.affine else 0)
    if pass_ == FORWARD:
        return ModelBytes(x, weight + others, 0, x + y + weight + others)
    return ModelBytes(x, 2 * weight + 2 * others, 0, 2 * x + y + 2 * weight + 2 * others)


# Theoretical DRAM bandwidth (GB/s) of GPUs by the name CUDA reports, from the vendors' data sheets.
DRAM_GBPS = {
    "H200": 4800,
    "GH200": 4000,
    "H100 NVL": 3900,
    "H100 SXM": 3350,
    "H100 80GB HBM3": 3350,
    "H100 PCIe": 2000,
    "H100": 3350,
    "H800": 3350,
    "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935,
    "A100-SXM4-40GB": 1555,
    "A100-PCIE-40GB": 1555,
    "A100": 1555,
    "A10G": 600,
    "A10": 600,
    "L40S": 864,
    "L40": 864,
    "L4": 300,
    "V100": 900,
    "T4": 320,
    "RTX 4090": 1008,
    "RTX 3090": 936,
    "B200": 8000,
    "B100": 8000,
}


def dram_gbps(gpu_name: str) -> float | None:
    """The theoretical bandwidth of a GPU by name (longest matching key), else from NVML's bus
    width and memory clock when pynvml is installed; None when unknown."""
    for key in sorted(DRAM_GBPS, key=len, reverse=True):
        if key.lower() in gpu_name.lower():
            return float(DRAM_GBPS[key])
    return _nvml_gbps()


def _nvml_gbps() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
    except Exception:
        return None
    return bus_bits / 8 * clock_mhz * 1e6 * 2 / 1e9  # double data rate
