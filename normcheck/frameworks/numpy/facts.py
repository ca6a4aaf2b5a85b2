"""NumPy, as data: the convention of the CS231n assignment's functions (the cs231n form). NumPy has
no built-in implementations to verify, so no known defects.
"""

from __future__ import annotations

from normcheck.conventions import BIASED, CHANNELS_FIRST, OLD, Convention
from normcheck.frameworks.base import KnownIssue

_CS231N_PARAMS = "required arguments (pass ones and zeros for none)"
# CS231n assignment 2 (cs231n/layers.py): NumPy functions forward(x, gamma, beta, [G,] param) -> (out, cache)
# and backward(dout, cache) -> (dx, dgamma, dbeta); the defaults are the assignment's param.get(...) values.
CS231N = {
    "bn": Convention(
        "cs231n",
        "bn",
        api="batchnorm_forward / spatial_batchnorm_forward(x, gamma, beta, bn_param)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="N of (N, D); N, H and W of (N, C, H, W), per feature or channel",
        affine=f"(D,) or (C,), {_CS231N_PARAMS}",
        momentum=0.9,
        momentum_weights=OLD,
        running_var=BIASED,
        notes="bn_param['mode'] ('train' or 'test') is required; the running statistics are read from "
        "and written back into bn_param (running_var starts at zeros when absent); backward is "
        "defined for training mode only (the test-mode cache is None)",
    ),
    "ln": Convention(
        "cs231n",
        "ln",
        api="layernorm_forward(x, gamma, beta, ln_param)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="D, per row of (N, D)",
        affine=f"(D,), {_CS231N_PARAMS}",
        notes="(N, D) input only",
    ),
    "gn": Convention(
        "cs231n",
        "gn",
        api="spatial_groupnorm_forward(x, gamma, beta, G, gn_param)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="per sample, G contiguous channel groups × H, W",
        affine=f"(1, C, 1, 1), {_CS231N_PARAMS}",
        notes="G is required; (N, C, H, W) input only; older handouts documented gamma as (C,)",
    ),
}

# a course's convention, not a framework's: no instance norm, no RMS norm
CONVENTIONS = {"cs231n": CS231N}

KNOWN_ISSUES: tuple[KnownIssue, ...] = ()
