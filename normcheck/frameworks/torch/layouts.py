"""The stress profile's inputs as PyTorch tensors: strided views of the same logical values, the
in-place call, and the memory format an implementation returns its results in.

The adapter builds every input through ``tensor``, which calls ``strided_view`` for the stress
layouts (names.StressLayout), so the built-in functions and layers and the user's torch forms
get the same views.
"""

from __future__ import annotations

import torch

from normcheck.names import CHANNELS_LAST, CONTIGUOUS, EXPANDED, IN_PLACE, SLICED, TRANSPOSED, Layout

# the layouts that are views of a tensor: the input keeps its values and changes its strides
VIEW_LAYOUTS: tuple[Layout, ...] = (SLICED, TRANSPOSED, EXPANDED)
STRIDED = "strided"  # a memory format that is neither contiguous nor channels-last
_CHANNELS_LAST_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}
# the gap between a sliced view's elements: a kernel that reads them as if the view were contiguous
# computes NaN, which no tolerance passes
POISON = float("nan")


def strided_view(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t``'s values as a view with the strides ``layout`` names:

    - sliced: every other element of a buffer twice as wide on the last axis, its gaps NaN (stride 2);
    - transposed: the transpose of a contiguous tensor holding the last two axes swapped (the last
      axis has the stride of the rows);
    - expanded: the first sample broadcast over the batch axis (stride 0), for input whose samples
      are all the same (the repeated input kind); anything else is refused.
    """
    if layout == SLICED:
        buffer = torch.full((*t.shape[:-1], 2 * t.shape[-1]), POISON, dtype=t.dtype, device=t.device)
        buffer[..., ::2] = t
        return buffer[..., ::2]
    if layout == TRANSPOSED:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == EXPANDED:
        first = t[:1]
        if not torch.equal(first.expand_as(t), t):
            raise ValueError("the expanded layout broadcasts one sample: its input must repeat that sample")
        return first.expand_as(t)
    raise ValueError(f"{layout!r} is no view layout; choose from {', '.join(VIEW_LAYOUTS)}")


def gradient_layout(layout: str) -> str:
    """The layout of the upstream gradient given with an input in ``layout``: the same, except a
    broadcast input's (its gradient differs per sample) and an in-place call's (none is given)."""
    return CONTIGUOUS if layout in (EXPANDED, IN_PLACE) else layout


def memory_format(t: torch.Tensor) -> str:
    """How ``t`` is laid out: "channels_last" (checked first: a tensor can be both), "contiguous",
    or "strided"."""
    wanted = _CHANNELS_LAST_FORMATS.get(t.ndim)
    if wanted is not None and t.is_contiguous(memory_format=wanted):
        return CHANNELS_LAST
    return CONTIGUOUS if t.is_contiguous() else STRIDED


class GradientFormat:
    """Records the memory format of the gradient autograd computes for a leaf, before it is stored
    in ``.grad`` (which PyTorch lays out like the leaf whatever the backward returned)."""

    def __init__(self, leaf: torch.Tensor) -> None:
        self.format: str | None = None
        leaf.register_hook(self._record)

    def _record(self, grad: torch.Tensor) -> None:
        self.format = memory_format(grad)
