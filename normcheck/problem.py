"""The inputs of one case: what every implementation checked or timed on it is given.

verify makes them seeded and hostile (normcheck.verify.inputs), bench makes them plain
(normcheck.bench.inputs); adapters, the reference and the diagnosis all read this one type.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from normcheck.names import DtypeName, InputKind, OpName
from normcheck.ops import OpParams


@dataclass(frozen=True, eq=False)
class Problem:
    """All inputs of one case, shared by every implementation checked on it."""

    op: OpName
    shape: tuple[int, ...]
    params: OpParams
    dtype: DtypeName
    kind: InputKind
    eps: float
    momentum: float
    x: np.ndarray
    dy: np.ndarray
    weight: np.ndarray | None
    bias: np.ndarray | None
    steps: tuple[np.ndarray, ...] = ()
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    unbiased_running_var: bool = True  # the framework's running-variance convention
    # fused add + norm (add_rms, add_ln): the residual added to x, and the upstream gradient of
    # the residual output h = x + residual; None for every other op
    residual: np.ndarray | None = None
    dresidual: np.ndarray | None = None
    # Weight Standardization followed by group norm (ws_gn): the group norm's weight and bias over
    # the convolution's output channels (``weight`` is the convolution's); None for every other op
    gn_weight: np.ndarray | None = None
    gn_bias: np.ndarray | None = None
    # FP8-quantized output with a static scale (params.quant): the given float32 scale, shape ();
    # None for every other case
    quant_scale: np.ndarray | None = None

    def initial_running(self) -> tuple[np.ndarray, np.ndarray]:
        """The running mean and variance before the first step, for a case that tracks them
        (``params.running_stats``, always for batch norm): a valid case then has both."""
        if self.running_mean is None or self.running_var is None:
            raise ValueError(f"{self.op}: a case with running statistics needs running_mean and running_var")
        return self.running_mean, self.running_var

    def fused_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The residual and the residual output's upstream gradient of a fused add + norm case."""
        if self.residual is None or self.dresidual is None:
            raise ValueError(f"{self.op}: a fused add + norm case needs residual and dresidual")
        return self.residual, self.dresidual


def case_seed(seed: int, *parts: object) -> int:
    """A stable 64-bit seed from the user's seed and the case's identity (not Python's salted hash)."""
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little")
