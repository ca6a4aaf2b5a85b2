"""How a user's norm with FP8 output is called (``quantized_arguments``), and what it returned,
read into the checks "quantized" (the FP8 values, their dtype kept) and "scale" the same way in
every framework: ``(q, scale)``, or ``q`` alone with a static scale (the scale is the one given);
the scale an array or a Python number. Anything else is a TypeError that says what came back (an
error row). Each framework says what its arrays are (``ArrayKind``); this module imports none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from normcheck.frameworks.base import RunOutput
from normcheck.ops._op import required
from normcheck.ops.quantize import QUANTIZED_CHECK, SCALE_CHECK
from normcheck.problem import Problem


def normalized_shape(p: Problem) -> tuple[int, ...]:
    """The case's ``normalized_shape``: the sizes of its trailing normalized axes."""
    k = required(p.params.normalized_ndim, "normalized_ndim")
    return tuple(int(n) for n in p.shape[len(p.shape) - k :])


def quantized_arguments(
    op: str, x: Any, shape: tuple[int, ...], weight: Any, bias: Any, eps: float, scale: Any
) -> list[Any]:
    """The positional arguments of a quantized norm function, as every form calls it:
    ``fn(x, normalized_shape, weight, eps[, scale])`` (rms) or ``fn(x, normalized_shape, weight,
    bias, eps[, scale])`` (ln), eps always given, weight and bias None where the case has none,
    the static scale last where the case gives one (``scale`` None: a dynamic scale)."""
    args: list[Any] = [x, shape, weight] + ([bias] if op == "ln" else []) + [eps]
    return args + ([scale] if scale is not None else [])


@dataclass(frozen=True)
class ArrayKind:
    """A framework's arrays: which values are one, how one is named in a message ("a float32
    tensor of shape (4, 16)"), and how one is added to a RunOutput as a check's value."""

    is_array: Callable[[object], bool]
    describe: Callable[[Any], str]
    add: Callable[[RunOutput, str, Any], None]
    returns: str  # what a quantized norm must return, in the framework's words


def kind(v: object, arrays: ArrayKind) -> str:
    """``v`` in a message: an array by ``arrays.describe``, else its type (and a sequence's length)."""
    if arrays.is_array(v):
        return arrays.describe(v)
    if isinstance(v, tuple | list):
        return f"a {type(v).__name__} of {len(v)}"
    return f"a {type(v).__name__}"


def quantized_outputs(result: object, static: bool, arrays: ArrayKind) -> RunOutput:
    """The checks of what a quantized norm returned; ``static``: the case gave it its scale."""

    def refused(what: str) -> TypeError:
        return TypeError(f"a quantized norm returns {arrays.returns}; {what}")

    if arrays.is_array(result) and static:
        q, scale = result, None
    elif isinstance(result, tuple | list) and len(result) == 2:
        q, scale = result
    else:
        raise refused(f"got {kind(result, arrays)}")
    if not arrays.is_array(q):
        raise refused(f"its q is {kind(q, arrays)}")
    out = RunOutput()
    arrays.add(out, QUANTIZED_CHECK, q)
    if scale is None:
        return out
    if arrays.is_array(scale):
        arrays.add(out, SCALE_CHECK, scale)
    elif isinstance(scale, int | float) and not isinstance(scale, bool):
        out.add(SCALE_CHECK, np.asarray(float(scale)), "float64")
    else:
        raise refused(f"its scale is {kind(scale, arrays)}")
    return out
