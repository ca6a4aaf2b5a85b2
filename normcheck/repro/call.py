"""What a framework's repro module is given and what it returns: the call of one implementation
on one case, all but the arrays, and the source text that makes it (see ReproModule in
normcheck.frameworks.base). Imports nothing above the domain's names."""

from __future__ import annotations

import json
from dataclasses import dataclass

from normcheck.names import DtypeName, Layout, OpName
from normcheck.ops import FUSED_BASE, OPS, OpParams
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.batch_norm import CUMULATIVE
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.ops.quantize import QUANTIZED
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.weight_standardization import PAPER, WEIGHT_STANDARDIZATION, WS_OPS

# The names a snippet's ``run(data)`` reads from ``data`` (the .npz), those the case has:
# x, dy, weight, bias, running_mean, running_var (initial values) and steps (the training
# batches, stacked); a fused add + norm's residual and dresidual (the residual output's upstream
# gradient); ws_gn's gn_weight and gn_bias; an FP8 case's static scale quant_scale; adaLN's
# stray_weight and stray_bias (the values a module's own (D,) weight and bias are given,
# normcheck.ops.adaptive_layer_norm.stray_affine). It returns a dict check -> float64 NumPy
# array in the canonical layout (channels at axis 1), as the adapter's RunOutput holds them;
# an FP8 case's also "quantized_dtype", the dtype q came in (e.g. "float8_e4m3fn").
ARRAY_NAMES = (
    "x",
    "residual",
    "dy",
    "dresidual",
    "weight",
    "bias",
    "gn_weight",
    "gn_bias",
    "running_mean",
    "running_var",
    "steps",
    "quant_scale",
    "stray_weight",
    "stray_bias",
)
QUANTIZED_DTYPE = "quantized_dtype"  # the key of q's dtype name in an FP8 case's outputs
# what each variant changes, in words
VARIANT_WORDS = {
    GEMMA: "y = xhat * (1 + weight)",
    NOBIAS: "no bias",
    CUMULATIVE: "momentum=None, the cumulative average",
    PAPER: "the paper's unbiased std + eps",
}


@dataclass(frozen=True)
class UserCode:
    """How a user implementation is called: its form (normcheck.frameworks.FORMS) and whether the
    optional arguments are left out. The script defines ``IMPL`` (and for a form with two functions
    ``BACKWARD``) before the snippet's code."""

    form: str
    omit_defaults: bool


@dataclass(frozen=True)
class ReproCall:
    """One implementation on one case, all but the arrays."""

    impl: str  # the implementation's name as reports show it
    op: OpName
    shape: tuple[int, ...]
    params: OpParams
    dtype: DtypeName
    layout: Layout
    device: str
    eps: float
    momentum: float  # PyTorch's meaning: the weight of the new batch
    framework_momentum: float | None  # what the API itself is given (None: the op has none)
    user: UserCode | None = None

    @property
    def training(self) -> bool:
        """Whether ``x`` runs on batch statistics (training steps always do)."""
        return self.params.mode == "train" or not self.params.running_stats

    @property
    def normalized_shape(self) -> tuple[int, ...]:
        """Layer and RMS norm: the trailing dims normalized."""
        k = self.params.normalized_ndim
        if k is None:
            raise ValueError(f"{self.op} has no normalized_ndim")
        return self.shape[len(self.shape) - k :]

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The shape of the weight and bias (layer and RMS norm: the sizes of the normalized axes,
        trailing or ``params.axes``; Weight Standardization: the bias's, (O,))."""
        return tuple(OPS[self.op].param_shape(self.shape, self.params))

    @property
    def has_weight(self) -> bool:
        """Whether the case has a weight (a convolution's always)."""
        return self.params.affine or self.op in WS_OPS

    @property
    def has_bias(self) -> bool:
        """Whether the case has a bias beside its weight (OPS[op].has_bias: not RMS norm's, nor
        the nobias variant's; Weight Standardization's when the convolution has one)."""
        return OPS[self.op].has_bias(self.params)


def extensions(call: ReproCall) -> dict[str, str]:
    """What ``call`` computes beyond the five plain ops, each by the name implementations declare
    it with (Implementation.extensions; adaLN by its op's name) and in words: a repro module
    writes the calls whose extensions are all in its ``COVERS``."""
    p, found = call.params, {}
    title = OPS[call.op].title
    if p.variant is not None:
        words = VARIANT_WORDS.get(p.variant)
        found[p.variant] = f"the {p.variant} variant of {title}" + (f" ({words})" if words else "")
    if call.op in FUSED_BASE:
        found[FUSED_ADD] = f"the {title} ({call.op})"
    if call.op == ADALN:
        found[ADALN] = f"the {title} (adaLN)"
    if p.axes is not None:
        found[AXES] = f"{title} over axes {','.join(map(str, p.axes))}"
    if p.quant is not None:
        found[QUANTIZED] = f"FP8-quantized output ({p.quant.label()})"
    if call.op in WS_OPS:
        found[WEIGHT_STANDARDIZATION] = f"Weight Standardization ({call.op})"
    return found


@dataclass(frozen=True)
class Snippet:
    """The framework's part of a script: import lines, then module-level code defining
    ``run(data) -> dict[str, np.ndarray]``; ``version`` is an expression naming the versions
    that ran it, ``needs`` the pip distributions the script needs besides NumPy."""

    imports: tuple[str, ...]
    code: str
    version: str
    needs: tuple[str, ...]


def block(lines: list[str], depth: int = 1) -> str:
    """``lines`` indented ``depth`` levels, one per line (empty lines stay empty)."""
    pad = "    " * depth
    return "".join(f"{pad}{line}\n" if line else "\n" for line in lines)


def quoted(value: str) -> str:
    """A string literal in double quotes, as formatters write them."""
    return json.dumps(value, ensure_ascii=False)
