"""Each framework's semantics of each op, as data: defaults, meanings, layouts.

Adapters take their declarations from here, the reference is parameterized by them, and
``normcheck conventions`` prints them. Nothing here imports a framework, so the command is
instant; tests/test_conventions.py checks every value against the installed frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from normcheck.ops.rms_norm import default_eps as machine_eps

NEW = "new"  # momentum is the weight of the new batch: running = (1 - m) * running + m * batch
OLD = "old"  # momentum is the weight of the old value: running = m * running + (1 - m) * batch
UNBIASED, BIASED = "unbiased", "biased"
CHANNELS_FIRST, CHANNELS_LAST = "channels_first", "channels_last"
TWO_PASS = "two-pass"
MACHINE_EPS = "machine eps"  # eps=None in PyTorch: finfo(compute dtype).eps


@dataclass(frozen=True)
class Convention:
    """How one framework's main API for one op behaves when the caller relies on its defaults."""

    framework: str
    op: str
    api: str
    eps: float | str  # a number, or MACHINE_EPS
    layout: str  # where the API expects channels (CHANNELS_FIRST or CHANNELS_LAST)
    reduction: str  # the axes the statistics run over, in the API's own terms
    affine: str  # shape of weight/bias, and whether they are on by default
    variance: str = TWO_PASS  # how the default computes the variance
    momentum: float | None = None  # the API's default, in its own meaning
    momentum_weights: str | None = None  # NEW or OLD
    running_var: str | None = None  # UNBIASED or BIASED; None: no running statistics
    eps_floor: float = 0.0  # eps below this is silently raised to it
    gradients: bool = True
    groups: int | None = None  # the default number of groups
    safe_setting: str = ""  # the setting that avoids a fragile default (see ``variance``)
    notes: str = ""

    def default_eps(self, dtype: str) -> float:
        return machine_eps(dtype) if self.eps == MACHINE_EPS else float(self.eps)

    @property
    def default_new_weight(self) -> float:
        """The default momentum in PyTorch's meaning (weight of the new batch)."""
        if self.momentum is None:
            return 0.1
        return self.momentum if self.momentum_weights == NEW else 1.0 - self.momentum

    def to_framework_momentum(self, new_weight: float) -> float:
        """Momentum in PyTorch's meaning → the value this API must be given."""
        return new_weight if self.momentum_weights == NEW else 1.0 - new_weight

    @property
    def unbiased_running_var(self) -> bool:
        return self.running_var == UNBIASED

    @property
    def fragile(self) -> bool:
        return self.variance != TWO_PASS


def _c(framework: str, op: str, **kw) -> Convention:
    return Convention(framework=framework, op=op, **kw)


_PT_PER_CHANNEL = "(C,)"
TORCH = {
    "bn": _c(
        "torch",
        "bn",
        api="nn.BatchNorm{1,2,3}d / F.batch_norm",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="N and spatial axes, per channel (axis 1)",
        affine=f"{_PT_PER_CHANNEL}, on",
        momentum=0.1,
        momentum_weights=NEW,
        running_var=UNBIASED,
    ),
    "ln": _c(
        "torch",
        "ln",
        api="nn.LayerNorm / F.layer_norm",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="the trailing len(normalized_shape) axes",
        affine="normalized_shape, on",
    ),
    "in": _c(
        "torch",
        "in",
        api="nn.InstanceNorm{1,2,3}d / F.instance_norm",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="spatial axes, per sample and channel",
        affine=f"{_PT_PER_CHANNEL}, off (affine=False)",
        momentum=0.1,
        momentum_weights=NEW,
        running_var=UNBIASED,
        notes="running statistics only with track_running_stats=True (off by default); "
        "they average the per-sample statistics over the batch",
    ),
    "gn": _c(
        "torch",
        "gn",
        api="nn.GroupNorm / F.group_norm",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="per sample, G contiguous channel groups × spatial axes",
        affine=f"{_PT_PER_CHANNEL}, on",
        notes="num_groups is required",
    ),
    "rms": _c(
        "torch",
        "rms",
        api="nn.RMSNorm / F.rms_norm",
        eps=MACHINE_EPS,
        layout=CHANNELS_FIRST,
        reduction="the trailing len(normalized_shape) axes",
        affine="normalized_shape, weight only, on",
        notes="eps=None means finfo(float32).eps for fp16/bf16/fp32, finfo(float64).eps for fp64",
    ),
}

TENSORFLOW = {
    "bn": _c(
        "tensorflow",
        "bn",
        api="keras.layers.BatchNormalization",
        eps=1e-3,
        layout=CHANNELS_LAST,
        reduction="every axis but `axis` (-1)",
        affine="(C,), on",
        momentum=0.99,
        momentum_weights=OLD,
        running_var=BIASED,
        notes="trainable=False freezes the layer into inference mode, unlike PyTorch; float16/bfloat16 "
        "inputs are computed in float32 and the moving statistics kept in the layer's dtype; "
        "tf.nn.moments + tf.nn.batch_normalization, not the fused kernel, so eps is not raised",
    ),
    "ln": _c(
        "tensorflow",
        "ln",
        api="keras.layers.LayerNormalization",
        eps=1e-3,
        layout=CHANNELS_LAST,
        reduction="`axis` (-1; any list of axes)",
        affine="shape of the normalized axes, on",
    ),
    "in": _c(
        "tensorflow",
        "in",
        api="keras.layers.GroupNormalization(groups=-1)",
        eps=1e-3,
        layout=CHANNELS_LAST,
        reduction="spatial axes, per sample and channel",
        affine="(C,), on",
        notes="no instance-norm layer: a group per channel; no running statistics",
    ),
    "gn": _c(
        "tensorflow",
        "gn",
        api="keras.layers.GroupNormalization",
        eps=1e-3,
        layout=CHANNELS_LAST,
        reduction="per sample, G contiguous channel groups × other axes",
        affine="(C,), on",
        groups=32,
    ),
    "rms": _c(
        "tensorflow",
        "rms",
        api="keras.layers.RMSNormalization",
        eps=1e-6,
        layout=CHANNELS_LAST,
        reduction="`axis` (-1; a list of trailing axes)",
        affine="shape of the normalized axes, scale only, on",
        notes="a list of axes that are not trailing fails: the scale is not broadcast back over them",
    ),
}

_FAST_VARIANCE = "one-pass E[x²] − E[x]² (use_fast_variance=True)"
_SAFE = "use_fast_variance=False"
_F32_STATS = "statistics in at least float32 (force_float32_reductions=True)"
JAX = {
    "bn": _c(
        "jax",
        "bn",
        api="flax.linen.BatchNorm",
        eps=1e-5,
        layout=CHANNELS_LAST,
        reduction="every axis but `axis` (-1)",
        affine="(C,), on",
        momentum=0.99,
        momentum_weights=OLD,
        running_var=BIASED,
        variance=_FAST_VARIANCE,
        safe_setting=_SAFE,
        notes=f"{_F32_STATS}; batch_stats are created in float32 whatever param_dtype",
    ),
    "ln": _c(
        "jax",
        "ln",
        api="flax.linen.LayerNorm",
        eps=1e-6,
        layout=CHANNELS_LAST,
        reduction="reduction_axes (-1)",
        affine="shape of feature_axes (-1), on",
        variance=_FAST_VARIANCE,
        safe_setting=_SAFE,
        notes=_F32_STATS,
    ),
    "in": _c(
        "jax",
        "in",
        api="flax.linen.InstanceNorm",
        eps=1e-6,
        layout=CHANNELS_LAST,
        reduction="every axis but batch and feature_axes (-1)",
        affine="(C,), on",
        variance=_FAST_VARIANCE,
        safe_setting=_SAFE,
        notes=f"no running statistics; {_F32_STATS}",
    ),
    "gn": _c(
        "jax",
        "gn",
        api="flax.linen.GroupNorm",
        eps=1e-6,
        layout=CHANNELS_LAST,
        reduction="per sample, G contiguous channel groups × other axes",
        affine="(C,), on",
        groups=32,
        variance=_FAST_VARIANCE,
        safe_setting=_SAFE,
        notes=f"the channels must be the last axis (no setting moves them); {_F32_STATS}",
    ),
    "rms": _c(
        "jax",
        "rms",
        api="flax.linen.RMSNorm",
        eps=1e-6,
        layout=CHANNELS_LAST,
        reduction="reduction_axes (-1)",
        affine="shape of feature_axes (-1), scale only, on",
        notes=f"no mean is subtracted, so use_fast_variance changes nothing; {_F32_STATS}",
    ),
}

_ONNX_STASH = "stash_type (the statistics' precision) defaults to float32"
ONNXRUNTIME = {
    "bn": _c(
        "onnxruntime",
        "bn",
        api="BatchNormalization (opset 15)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="N and spatial axes, per channel (axis 1)",
        affine="(C,), required inputs",
        momentum=0.9,
        momentum_weights=OLD,
        running_var=BIASED,
        gradients=False,
        notes="training_mode=1 normalizes with the batch statistics and returns the updated running "
        "statistics; epsilon and momentum are 32-bit float attributes (0.9 is stored as 0.89999998)",
    ),
    "ln": _c(
        "onnxruntime",
        "ln",
        api="LayerNormalization (opset 17)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="axes from `axis` (-1) to the last",
        affine="shape of the normalized axes, scale required",
        gradients=False,
        notes=f"{_ONNX_STASH}; ORT's CPU kernel computes float64 input in double whatever it is",
    ),
    "in": _c(
        "onnxruntime",
        "in",
        api="InstanceNormalization (opset 22)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="spatial axes, per sample and channel",
        affine="(C,), required inputs",
        gradients=False,
        notes="no running statistics; ORT has no CPU kernel for float64 or bfloat16",
    ),
    "gn": _c(
        "onnxruntime",
        "gn",
        api="GroupNormalization (opset 21)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="per sample, G contiguous channel groups × spatial axes",
        affine="(C,), required inputs",
        gradients=False,
        variance="one-pass E[x²] − E[x]² in stash_type (float32 by default)",
        safe_setting="stash_type=DOUBLE (11) for float16/float32 input; no setting avoids it for float64",
        notes="opset 18 took per-group scale and bias, opset 21 takes per-channel; "
        "ORT has no kernel of its own and runs the ONNX function body",
    ),
    "rms": _c(
        "onnxruntime",
        "rms",
        api="RMSNormalization (opset 23)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="axes from `axis` (-1) to the last",
        affine="shape of the normalized axes, scale required",
        gradients=False,
        notes=f"{_ONNX_STASH}; ORT has no bfloat16 CPU kernel",
    ),
}

_CS231N_PARAMS = "required arguments (pass ones and zeros for none)"
# CS231n assignment 2 (cs231n/layers.py): NumPy functions forward(x, gamma, beta, [G,] param) -> (out, cache)
# and backward(dout, cache) -> (dx, dgamma, dbeta); the defaults are the assignment's param.get(...) values.
CS231N = {
    "bn": _c(
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
    "ln": _c(
        "cs231n",
        "ln",
        api="layernorm_forward(x, gamma, beta, ln_param)",
        eps=1e-5,
        layout=CHANNELS_FIRST,
        reduction="D, per row of (N, D)",
        affine=f"(D,), {_CS231N_PARAMS}",
        notes="(N, D) input only",
    ),
    "gn": _c(
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

CONVENTIONS: dict[str, dict[str, Convention]] = {
    "torch": TORCH,
    "tensorflow": TENSORFLOW,
    "jax": JAX,
    "onnxruntime": ONNXRUNTIME,
    "cs231n": CS231N,  # a course's convention, not a framework: no instance norm, no RMS norm
}


def for_framework(framework: str) -> dict[str, Convention]:
    return CONVENTIONS[framework]


@dataclass(frozen=True)
class Settings:
    """The values one case runs with under a framework's conventions, and how they were derived."""

    eps: float  # what the reference uses (after any floor)
    momentum: float  # PyTorch's meaning: the weight of the new batch
    unbiased_running_var: bool
    framework_momentum: float | None  # what the API itself is given
    notes: tuple[str, ...] = ()


def settings(conv: Convention, dtype: str, eps: float | None = None, momentum: float | None = None) -> Settings:
    """The case's eps and momentum: the API's defaults, or the caller's values translated into
    the API's meaning, with a note for each translation a porter must make by hand."""
    notes = []
    if eps is None:
        eps = conv.default_eps(dtype)
    elif eps != conv.default_eps(dtype):
        default = conv.eps if conv.eps == MACHINE_EPS else f"{conv.default_eps(dtype):g}"
        notes.append(f"{conv.api}: eps={eps:g} given explicitly (its default is {default})")
    if eps < conv.eps_floor:
        notes.append(f"{conv.api}: eps={eps:g} is silently raised to {conv.eps_floor:g}")
        eps = conv.eps_floor
    new_weight = conv.default_new_weight if momentum is None else momentum
    framework_momentum = None
    if conv.momentum_weights is not None:
        framework_momentum = conv.to_framework_momentum(new_weight)
        if momentum is not None and conv.momentum_weights != NEW:
            meaning = "the weight of the new batch" if conv.momentum_weights == NEW else "the weight of the old value"
            notes.append(
                f"{conv.api}: momentum={framework_momentum:g} ({meaning}) for momentum {momentum:g} "
                "in PyTorch's meaning (the weight of the new batch)"
            )
    return Settings(eps, new_weight, conv.unbiased_running_var, framework_momentum, tuple(notes))


FIELD_NAMES = tuple(f.name for f in fields(Convention))
