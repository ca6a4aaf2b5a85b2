"""JAX, as data: the conventions of the flax.linen modules and their known defects.

Imports no framework: the parent process judges with it, and ``normcheck conventions`` prints it.
"""

from __future__ import annotations

from typing import Any

from normcheck.conventions import BIASED, CHANNELS_LAST, OLD, Convention
from normcheck.frameworks.base import KnownIssue
from normcheck.ops import OpParams
from normcheck.ops.layer_norm import NOBIAS

MODULE_NAMES = {
    "bn": "flax.linen.BatchNorm",
    "ln": "flax.linen.LayerNorm",
    "in": "flax.linen.InstanceNorm",
    "gn": "flax.linen.GroupNorm",
    "rms": "flax.linen.RMSNorm",
}
SAFE_SETTING = "use_fast_variance=False"
# RMS norm has no mean to subtract, so use_fast_variance changes nothing there.
HAS_FAST_VARIANCE = ("bn", "ln", "in", "gn")

_FAST_VARIANCE = "one-pass E[x²] − E[x]² (use_fast_variance=True)"
_SAFE = SAFE_SETTING
_F32_STATS = "statistics in at least float32 (force_float32_reductions=True)"
JAX = {
    "bn": Convention(
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
    "ln": Convention(
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
    "in": Convention(
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
    "gn": Convention(
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
    "rms": Convention(
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

CONVENTIONS = {"jax": JAX}

DEFAULT_IMPLS = tuple(MODULE_NAMES[op] for op in HAS_FAST_VARIANCE)
HALF = ("float16", "bfloat16")
ONE_PASS = (
    "Flax's default use_fast_variance=True computes the variance in one pass, max(0, E[x^2] - E[x]^2), whose "
    "rounding error (up to an ulp of E[x^2]) swamps a variance that is small beside the squared mean: large "
    "means (float64 too), groups of two or three close values, and a constant group, whose variance comes out "
    "2e-8 to 7e-8 instead of 0, not small beside eps; use_fast_variance=False avoids it"
)
# Each was established by re-running the computation under the stated cause in NumPy (the one-pass
# variance; the variance Flax used, read back from its gradient; the two rounded gradient paths);
# tests/frameworks/test_jax_adapter.py re-checks each.
KNOWN_ISSUES = (
    KnownIssue(
        ONE_PASS,
        hypotheses=("one_pass_variance",),
        ops=HAS_FAST_VARIANCE,
        impls=DEFAULT_IMPLS,
        dtypes=("float32",),
        kinds=("large_mean",),
        checks=("forward", "grad_input", "grad_weight", "running_var"),
    ),
    KnownIssue(
        ONE_PASS,
        hypotheses=("one_pass_variance",),
        ops=HAS_FAST_VARIANCE,
        impls=DEFAULT_IMPLS,
        dtypes=("float64",),
        kinds=("large_mean",),
        checks=("forward", "grad_input", "grad_weight"),
    ),
    # float16 data at 1e4 have a spread of 128: the float32 one-pass variance errs by about 1 per
    # step (median over 200 summation orders; two-pass: 1.2e-4), which the running variance
    # accumulates in proportion to the momentum (error 9.8 with PyTorch's 0.1, 1.05 with Flax's 0.01):
    # it shows when a port gives PyTorch's momentum (--momentum 0.1), not under Flax's default
    KnownIssue(
        ONE_PASS,
        hypotheses=("one_pass_variance",),
        ops=("bn",),
        impls=DEFAULT_IMPLS,
        dtypes=("float16",),
        kinds=("large_mean",),
        checks=("running_var",),
    ),
    KnownIssue(
        ONE_PASS,
        hypotheses=("one_pass_variance",),
        ops=HAS_FAST_VARIANCE,
        impls=DEFAULT_IMPLS,
        dtypes=("float32", *HALF),
        kinds=("constant",),
        checks=("grad_input",),
    ),
    KnownIssue(
        ONE_PASS,
        hypotheses=("one_pass_variance",),
        ops=("gn",),
        impls=DEFAULT_IMPLS,
        dtypes=("float32",),
        kinds=("normal",),
        checks=("forward", "grad_input", "grad_weight"),
    ),
    # data at 6e4 in float32, and float16 data at 1e4 (a spread of 128), on small batches and groups
    KnownIssue(
        ONE_PASS,
        hypotheses=("one_pass_variance",),
        ops=("bn", "in"),
        impls=DEFAULT_IMPLS,
        dtypes=("float32",),
        kinds=("half_range",),
        checks=("forward", "grad_input", "grad_weight"),
    ),
    KnownIssue(
        ONE_PASS,
        hypotheses=("one_pass_variance",),
        ops=("bn", "ln", "gn"),
        impls=DEFAULT_IMPLS,
        dtypes=("float16",),
        kinds=("large_mean",),
        checks=("forward", "grad_input", "grad_weight"),
    ),
    KnownIssue(
        "Flax converts a float16/bfloat16 input to float32 twice (for the statistics, and for x - mean), so "
        "its gradient is the sum of two parts each rounded to the half dtype first; where they nearly cancel "
        "(groups of two or three values) few correct digits are left",
        hypotheses=("double_conversion",),
        ops=(*HAS_FAST_VARIANCE, "rms"),
        dtypes=HALF,
        checks=("grad_input",),
    ),
)


# The flax.linen fields normcheck sets on a user's module, with the installed Flax layer's
# default (tests/frameworks/test_jax_forms.py checks them against flax.linen); read by the
# flax_module form and its reproducers.
FLAX_FIELDS: dict[str, dict[str, Any]] = {
    "gn": {"num_groups": 32, "epsilon": JAX["gn"].eps, "use_bias": True, "use_scale": True},
    "ln": {"epsilon": JAX["ln"].eps, "use_bias": True, "use_scale": True, "reduction_axes": -1, "feature_axes": -1},
    "bn": {"momentum": JAX["bn"].momentum, "epsilon": JAX["bn"].eps, "use_bias": True, "use_scale": True, "axis": -1},
    "in": {"epsilon": JAX["in"].eps, "use_bias": True, "use_scale": True},
    "rms": {"epsilon": JAX["rms"].eps, "use_scale": True, "reduction_axes": -1, "feature_axes": -1},
}
# Given only to a class that declares it: a module may derive its parameters' shape from reduction_axes.
OPTIONAL_FIELDS = ("feature_axes",)


def field_values(params: OpParams, eps: float, momentum: float | None) -> dict[str, Any]:
    """Every field of FLAX_FIELDS with its value for a case (``momentum`` in Flax's meaning)."""
    axes: int | tuple[int, ...] | None = None
    if params.axes is not None:  # --axes: LayerNorm(reduction_axes=..., feature_axes=...) takes any
        axes = tuple(params.axes)
    elif params.normalized_ndim is not None:
        axes = -1 if params.normalized_ndim == 1 else tuple(range(-params.normalized_ndim, 0))
    return {
        "num_groups": params.groups,
        "epsilon": eps,
        "use_bias": params.affine and params.variant != NOBIAS,  # layer norm without bias: use_bias=False
        "use_scale": params.affine,
        "reduction_axes": axes,
        "feature_axes": axes,
        "axis": -1,
        "momentum": momentum if params.running_stats else None,
    }
