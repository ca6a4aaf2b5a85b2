"""Parsing of the values users type: comma lists, shapes, integers. Errors are UsageError."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar, cast

from normcheck.errors import UsageError

T = TypeVar("T", bound=str)


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def choose(value: str | None, valid: Iterable[T], what: str, default: Iterable[T]) -> tuple[T, ...]:
    """Parse a comma list, each item one of ``valid`` (so typed as ``valid``'s items are)."""
    names = tuple(valid)
    items = split_list(value)
    for item in items:
        if item not in names:
            raise UsageError(f"unknown {what} {item!r}; choose from {', '.join(names)}")
    # every item is one of ``valid``, so it has their type
    return tuple(cast(T, item) for item in dict.fromkeys(items)) if items else tuple(default)


def parse_shape(text: str, allow_empty: bool = True) -> tuple[int, ...]:
    """A shape typed as "2,64,8,8" (or "2x64x8x8"). Sizes of 0 (an empty tensor, an edge real
    kernels get wrong) are sizes too, unless ``allow_empty`` is False (a timing needs data)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"malformed shape {text!r}; write sizes separated by commas, e.g. 2,64,8,8") from None
    smallest = 0 if allow_empty else 1
    if not shape or any(n < smallest for n in shape):
        what = "a non-negative" if allow_empty else "a positive"
        raise UsageError(f"malformed shape {text!r}; every size must be {what} integer")
    return shape


def parse_ints(value: str | None, what: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in split_list(value))
    except ValueError:
        raise UsageError(f"{what} must be a comma list of integers, got {value!r}") from None
    if any(i < 1 for i in items):
        raise UsageError(f"{what} must be positive, got {value!r}")
    return items
