"""What an op is: the choices it makes on top of the generic normalization."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from normcheck.ops._generic import Normalization

if TYPE_CHECKING:
    from normcheck.ops.quantize import Quantization


@dataclass(frozen=True)
class OpParams:
    """The op-specific settings of one case.

    groups: group norm's G. normalized_ndim: how many trailing dims layer/RMS norm normalize.
    mode: "train" or "eval" for ops with running statistics. affine: weight and bias present.
    running_stats: whether running statistics are tracked (always for batch norm).
    group_affine: group norm's weight and bias hold one value per group, shape (G,), as in ONNX
    GroupNormalization-18, instead of one per channel.
    variant: one of the op's ``Op.variants()``, the formula it changes: RMS norm's "gemma"
    (y = xhat * (1 + weight), Gemma's offset), layer norm's "nobias" (no bias,
    ``torch.nn.LayerNorm(bias=False)``); None for the op itself.
    axes: layer norm over a set of axes that are not the trailing ones (ConvNeXt's LayerNorm2d:
    (1,) of NCHW), non-negative and ascending; None for the trailing ``normalized_ndim`` axes.
    quant: the output quantized to FP8 with a scale (normcheck.ops.quantize); None: not quantized.
    weight_dtype: the dtype the weight is stored in when it is not the input's (a precision
    policy's float32 master weight, normcheck.policies); its values are the case dtype's still.
    """

    groups: int | None = None
    normalized_ndim: int | None = None
    mode: str = "train"
    affine: bool = True
    running_stats: bool = False
    # out of repr: a case's seed hashes the repr, and the cases without it keep their inputs
    group_affine: bool = field(default=False, repr=False)
    # out of repr too: a variant's case has the seed, and so the inputs, of the case without it
    variant: str | None = field(default=None, repr=False)
    # Weight Standardization's convolution (ws, ws_gn): (out_channels, kernel_size, padding), a
    # square kernel at stride 1; None for every other op. Out of repr: the other ops' seeds stay
    conv: tuple[int, int, int] | None = field(default=None, repr=False)
    # out of repr too: a case over other axes has the seed of the same shape's plain cases
    axes: tuple[int, ...] | None = field(default=None, repr=False)
    # out of repr too: a quantized case has the inputs of the same case unquantized
    quant: Quantization | None = field(default=None, repr=False)
    # out of repr too: a case with its weight stored in float32 has the inputs of the plain case
    weight_dtype: str | None = field(default=None, repr=False)

    @property
    def input_stats(self) -> bool:
        """Whether the batch is normalized with its own statistics (not the running ones)."""
        return self.mode == "train" or not self.running_stats

    def label(self) -> str:
        parts = []
        if self.groups is not None:
            parts.append(f"G={self.groups}")
        if self.conv is not None:
            parts.append("O={} k={} p={}".format(*self.conv))
        if self.normalized_ndim is not None:
            parts.append(f"k={self.normalized_ndim}")
        if self.axes is not None:
            parts.append("axes=" + ",".join(map(str, self.axes)))
        if self.running_stats:
            parts.append(self.mode)
        if not self.affine:
            parts.append("no-affine")
        elif self.group_affine:
            parts.append("per-group affine")
        if self.variant is not None:
            parts.append(self.variant)
        if self.quant is not None:
            parts.append(self.quant.label())
        if self.weight_dtype is not None and self.affine:
            parts.append(f"{self.weight_dtype} weight")
        return " ".join(parts) or "-"


@dataclass(frozen=True)
class Op:
    """Base of the five op definitions. Subclasses override the hooks below."""

    name: str
    title: str
    min_ndim: int
    max_ndim: int | None = None

    # -- what the op decides -------------------------------------------------
    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        raise NotImplementedError

    def param_shape(self, shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
        """Shape of weight and bias (channels by default)."""
        return (shape[1],)

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        raise NotImplementedError

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        """Variants checked on a shape the user asked for."""
        raise NotImplementedError

    def has_bias(self, params: OpParams) -> bool:
        """Whether a case of ``params`` has a bias beside its weight."""
        return params.affine

    def variants(self) -> tuple[str, ...]:
        """The names ``OpParams.variant`` may take for this op (``--variant``)."""
        return ()

    def variant_cases(self, variant: str) -> list[tuple[tuple[int, ...], OpParams]]:
        """The default cases of ``variant``: the op's grid with the variant set, where it applies."""
        return [
            (shape, replace(params, variant=variant))
            for shape, params in self.default_cases()
            if self.variant_problem(replace(params, variant=variant)) is None
        ]

    def variant_problem(self, params: OpParams) -> str | None:
        """Why ``params.variant`` is not a variant of this op (or cannot take the other params)."""
        if params.variant is None or params.variant in self.variants():
            return None
        known = ", ".join(self.variants()) or "none"
        return f"{self.title} has no variant {params.variant!r} (its variants: {known})"

    # -- shared behaviour ----------------------------------------------------
    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        """Why ``shape``/``params`` is not a valid case, or None."""
        if len(shape) < self.min_ndim or (self.max_ndim is not None and len(shape) > self.max_ndim):
            hi = f"..{self.max_ndim}" if self.max_ndim else "+"
            return f"{self.title} needs a {self.min_ndim}{hi}-D input, got shape {fmt_shape(shape)}"
        if params.group_affine and params.groups is None:
            return f"{self.title}: per-group affine parameters need a group count"
        return self.variant_problem(params)

    def update_running(
        self,
        x: np.ndarray,
        params: OpParams,
        running_mean: np.ndarray,
        running_var: np.ndarray,
        momentum: float,
        dtype: type = np.float64,
        mean_ulps: int = 0,
        unbiased: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One training step's running-statistics update.

        running = (1 - momentum) * running + momentum * batch (momentum in PyTorch's meaning);
        the batch variance is Bessel-corrected (n / (n - 1)) when ``unbiased`` (PyTorch) and
        the population variance otherwise (Keras, Flax, ONNX). Per-sample statistics (instance
        norm) are averaged over the batch. An empty batch leaves them as they are (PyTorch).
        """
        rm: np.ndarray = np.array(running_mean, dtype=dtype)  # copies: the result is a new array
        rv: np.ndarray = np.array(running_var, dtype=dtype)
        if np.size(x) == 0:
            return rm, rv
        norm = self.normalization(np.shape(x), params)
        mean, var = norm.moments(x, dtype, mean_ulps)
        n = norm.count
        channels = np.shape(x)[1]
        batch_mean = mean.reshape(-1, channels).mean(axis=0)
        correction = (n / (n - 1) if n > 1 else np.nan) if unbiased else 1.0
        batch_var = (var * correction).reshape(-1, channels).mean(axis=0)
        m = dtype(momentum)
        return (1 - m) * rm + m * batch_mean, (1 - m) * rv + m * batch_var


def required(value: int | None, name: str) -> int:
    """A setting the op cannot do without (group norm's groups, layer norm's normalized_ndim).

    ``validate`` refuses a case that lacks it; this guards the code that runs on a valid case.
    """
    if value is None:
        raise ValueError(f"{name} is required, got None")
    return value


def running_pair(
    running_mean: np.ndarray | None, running_var: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(running mean, running var) when both are given, None when neither is; ValueError for one alone."""
    if running_mean is None and running_var is None:
        return None
    if running_mean is None or running_var is None:
        raise ValueError("give running_mean and running_var together, or neither")
    return running_mean, running_var


def running_as_stats(
    shape: tuple[int, ...], running: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The running statistics reshaped to broadcast against ``x``, for evaluation mode."""
    if running is None:
        raise ValueError("evaluation mode normalizes with the running statistics: give running_mean and running_var")
    b = broadcast_channels(len(shape), shape[1])
    return np.reshape(running[0], b), np.reshape(running[1], b)


def check_shape(name: str, value: np.ndarray | None, want: tuple[int, ...], what: str) -> None:
    """ValueError, as PyTorch raises, when a parameter given does not have the shape ``want``."""
    if value is not None and np.shape(value) != want:
        raise ValueError(
            f"Expected {name} to be of shape {list(want)} ({what}), but got {name} of shape {list(np.shape(value))}"
        )


def check_per_channel(shape: tuple[int, ...], **params: np.ndarray | None) -> None:
    """ValueError for an (N, C, ...) op's parameter (weight, running mean, ...) that is not (C,)."""
    if len(shape) < 2:
        raise ValueError(
            f"Expected at least 2 dimensions (N, C, ...) for input tensor, got input of shape {list(shape)}"
        )
    for name, value in params.items():
        check_shape(name, value, (shape[1],), f"one value per channel of an input of shape {list(shape)}")


def check_more_than_one_value(count: int, shape: Sequence[int], what: str) -> None:
    """ValueError where PyTorch raises one: statistics from the input over a single value."""
    if count == 1:
        raise ValueError(f"Expected more than 1 {what} when training, got input size {list(shape)}")


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def trailing_axes(ndim: int, k: int) -> tuple[int, ...]:
    return tuple(range(ndim - k, ndim))


def spatial_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(2, ndim))


def broadcast_channels(ndim: int, channels: int) -> tuple[int, ...]:
    return (1, channels) + (1,) * (ndim - 2)


def divisors(n: int) -> list[int]:
    """Every divisor of ``n`` (>= 1), ascending, found in O(sqrt(n)) steps."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]
