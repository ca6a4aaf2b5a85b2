"""Distributed batch norm (``--world-size``): which world sizes a request asks for and how a
case's global batch is dealt out to the ranks. Imports no framework: the parent plans with it.

A distributed case is an ordinary batch-norm case whose input is the *global* batch: each of
the W ranks gets a contiguous slice of it along N, of unequal sizes, and the rank outputs put
back together (forward and input gradients concatenated, weight and bias gradients summed over
the ranks, rank 0's running statistics) are judged against the reference on the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from normcheck.errors import UsageError
from normcheck.parsing import split_list

WorldSizes = str | int | Sequence[int] | None


def parse_world_sizes(value: WorldSizes) -> tuple[int, ...]:
    """World sizes as given (a comma list, an int or a sequence): distinct integers, each at least 2."""
    if value is None:
        return ()
    if isinstance(value, bool):
        raise UsageError(f"world_size must be a comma list of integers of at least 2, got {value!r}")
    text = str(value) if isinstance(value, int | str) else ",".join(map(str, value))
    try:
        sizes = tuple(int(v) for v in split_list(text))
    except ValueError:
        sizes = ()
    if not sizes or any(s < 2 for s in sizes):
        raise UsageError(f"world_size must be a comma list of integers of at least 2, got {text!r}")
    return tuple(dict.fromkeys(sizes))


def split_batch(n: int, world: int) -> list[int]:
    """The batch sizes of ``world`` ranks sharing a batch of ``n`` (n >= world): one sample each,
    then the rest dealt in proportion 1 : 2 : ... : world, so ranks get unequal shares wherever
    n allows (9 over 2 ranks: 3 and 6; 16 over 3: 3, 5 and 8)."""
    if n < world:
        raise ValueError(f"a batch of {n} cannot be split over {world} ranks")
    rest = n - world
    total = world * (world + 1) // 2
    bounds = [round(rest * (r + 1) * (r + 2) / 2 / total) for r in range(world)]
    shares = [b - a for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]
    return [1 + s for s in shares]


def unsplittable(shape: tuple[int, ...], world: int) -> str | None:
    """Why a case of ``shape`` cannot run over ``world`` ranks (a skip row), or None."""
    if len(shape) < 2 or shape[0] < world:
        return f"a batch of {shape[0] if shape else 0} cannot be split over {world} ranks (each needs a sample)"
    return None


def world_label(name: str, world: int) -> str:
    """The implementation's name in reports: ``nn.SyncBatchNorm (world 3)``."""
    return f"{name} (world {world})"
