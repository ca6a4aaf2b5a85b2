"""verify's quick profile: the fewest cases of each op's default grid that expose every known
mistake the grid exposes, in every dtype, rank of input and kind of parameters it has. How they
are chosen: normcheck.verify.quick_derivation (``derive`` chose the table below;
benchmarks/derive_quick_profile.py prints it anew; tests/verify/test_profiles.py proves the
table still covers what the grid exposes).
"""

from __future__ import annotations

from dataclasses import dataclass

from normcheck.names import DtypeName, InputKind, OpName
from normcheck.ops import OpParams


@dataclass(frozen=True)
class QuickCase:
    """One case of the default grid: an op's shape and params, in one dtype, on one input kind."""

    shape: tuple[int, ...]
    params: OpParams
    dtype: DtypeName
    kind: InputKind


def Q(shape: tuple[int, ...], dtype: str, kind: str, **params) -> QuickCase:
    return QuickCase(shape, OpParams(**params), dtype, kind)  # type: ignore[arg-type]


# fmt: off
QUICK: dict[str, tuple[QuickCase, ...]] = {
    "bn": (
        Q((1, 4, 3, 3), "float32", "constant", running_stats=True),
        Q((8, 5), "float16", "large_mean", running_stats=True),
        Q((8, 5), "float32", "large_mean", running_stats=True),
        Q((2, 3, 2, 3, 4), "float32", "large_mean", mode="eval", running_stats=True),
        Q((4, 6, 7), "float64", "large_mean", running_stats=True),
        Q((1, 4, 3, 3), "bfloat16", "normal", running_stats=True),
        Q((1, 4, 3, 3), "float32", "normal", running_stats=True),
        Q((4, 6, 7), "float64", "half_range", mode="eval", running_stats=True),
    ),
    "ln": (
        Q((2, 3, 4, 5), "float32", "constant", normalized_ndim=3),
        Q((4, 16), "float16", "half_range", normalized_ndim=1),
        Q((4, 16), "float32", "half_range", normalized_ndim=1),
        Q((1, 7, 24), "float64", "large_mean", normalized_ndim=1),
        Q((3, 2, 3, 4, 5), "float32", "large_mean", normalized_ndim=2),
        Q((4, 16), "bfloat16", "normal", normalized_ndim=1),
        Q((4, 16), "float32", "normal", normalized_ndim=1),
    ),
    "in": (
        Q((3, 4, 5, 5), "float32", "constant", running_stats=True),
        Q((2, 3, 10), "float16", "half_range"),
        Q((2, 3, 10), "float32", "half_range"),
        Q((2, 4, 6, 6), "float64", "large_mean", affine=False),
        Q((3, 4, 5, 5), "float32", "large_mean", mode="eval", running_stats=True),
        Q((2, 3, 3, 4, 5), "bfloat16", "normal"),
        Q((2, 3, 3, 4, 5), "float32", "normal"),
        Q((3, 4, 5, 5), "float64", "half_range", running_stats=True),
    ),
    "gn": (
        Q((2, 9, 1, 1), "float32", "normal", groups=3),
        Q((5, 4), "float16", "large_mean", groups=2),
        Q((5, 4), "float32", "large_mean", groups=2),
        Q((2, 6, 5, 5), "float64", "large_mean", groups=1),
        Q((2, 6, 5, 5), "float32", "large_mean", groups=6),
        Q((3, 32, 7), "bfloat16", "normal", groups=8),
        Q((3, 32, 7), "float32", "normal", groups=8),
        Q((2, 10, 3, 4, 5), "float32", "normal", groups=5),
    ),
    "rms": (
        Q((3, 2, 3, 4, 5), "float32", "tiny_scale", normalized_ndim=3),
        Q((2, 6, 32), "float16", "large_mean", normalized_ndim=1, affine=False),
        Q((2, 6, 32), "float32", "large_mean", normalized_ndim=1, affine=False),
        Q((4, 16), "float64", "tiny_scale", normalized_ndim=1),
        Q((2, 3, 8, 8), "bfloat16", "normal", normalized_ndim=2),
        Q((2, 3, 8, 8), "float32", "normal", normalized_ndim=2),
    ),
}
# fmt: on


def in_quick(op: OpName, shape: tuple[int, ...], params: OpParams, dtype: str, kind: str) -> bool:
    return any(
        c.shape == tuple(shape) and c.params == params and c.dtype == dtype and c.kind == kind for c in QUICK[op]
    )
