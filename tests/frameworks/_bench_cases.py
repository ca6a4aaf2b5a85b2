"""Tiny cases the bench target tests share."""

from __future__ import annotations

from normcheck.ops import OpParams

# name -> (op, shape, params): every op, batch norm in both modes (forward-only targets)
OP_CASES = {
    "bn train": ("bn", (4, 6, 3, 3), OpParams(mode="train", running_stats=True)),
    "bn eval": ("bn", (4, 6, 3, 3), OpParams(mode="eval", running_stats=True)),
    "ln": ("ln", (3, 4, 8), OpParams(normalized_ndim=1)),
    "in": ("in", (2, 6, 4, 4), OpParams()),
    "gn": ("gn", (2, 8, 4, 4), OpParams(groups=4)),
    "rms": ("rms", (3, 4, 8), OpParams(normalized_ndim=2)),
}
# op -> (shape, params): the ops timed with gradients by the framework targets
GRAD_CASES = {
    "gn": ((2, 4, 3, 3), OpParams(groups=2)),
    "bn": ((3, 4, 5), OpParams(running_stats=True)),
    "ln": ((2, 3, 8), OpParams(normalized_ndim=1)),
    "rms": ((2, 3, 8), OpParams(normalized_ndim=1)),
}
