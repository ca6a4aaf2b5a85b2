"""ONNX Runtime, as data: the conventions of the ONNX ops and ORT's known defects in running them.

Imports no framework: the parent process judges with it, and ``normcheck conventions`` prints it.
"""

from __future__ import annotations

from normcheck.conventions import BIASED, CHANNELS_FIRST, OLD, Convention
from normcheck.frameworks.base import KnownIssue

DEFAULT_GN = "onnx.GroupNormalization"  # the stash_type issues below spare the stash_type=DOUBLE variant

_ONNX_STASH = "stash_type (the statistics' precision) defaults to float32"
ONNXRUNTIME = {
    "bn": Convention(
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
    "ln": Convention(
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
    "in": Convention(
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
    "gn": Convention(
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
    "rms": Convention(
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

CONVENTIONS = {"onnxruntime": ONNXRUNTIME}

# Each was established by re-running the reference under the stated cause (momentum 1 - float32(0.9);
# a NumPy copy of GroupNormalization's function body); tests/frameworks/test_onnxruntime_adapter.py re-checks each.
# The op's current definition in the default ONNX domain. InstanceNormalization 22 only widens
# opset 6's types to bfloat16, so ORT reports a missing bfloat16 kernel as NOT_IMPLEMENTED
# instead of rejecting the model's types.
OPSETS = {
    "bn": ("BatchNormalization", 15),
    "ln": ("LayerNormalization", 17),
    "in": ("InstanceNormalization", 22),
    "gn": ("GroupNormalization", 21),
    "rms": ("RMSNormalization", 23),
}
# Names of the inputs after X, in the op's order; weight and bias are required inputs.
PARAM_INPUTS = {
    "bn": ("scale", "B", "input_mean", "input_var"),
    "ln": ("Scale", "B"),
    "in": ("scale", "B"),
    "gn": ("scale", "bias"),
    "rms": ("scale",),
}

KNOWN_ISSUES = (
    KnownIssue(
        "ONNX stores BatchNormalization's momentum as a 32-bit float attribute: 0.9 becomes 0.89999998, "
        "so float64 running statistics of large values, and the evaluation outputs normalized with them, "
        "drift by about 1e-7 relative",
        hypotheses=("momentum_single_precision",),
        ops=("bn",),
        dtypes=("float64",),
        kinds=("large_mean", "half_range"),
        checks=("forward", "running_mean", "running_var"),
    ),
    KnownIssue(
        "ONNX's GroupNormalization (opset 21), which ORT runs as its function body, computes the variance "
        "in one pass, E[x^2] - E[x]^2, which cancels catastrophically when the mean is large (NaN with the "
        "default float32 statistics, errors of 1e3 tolerances in double); no setting avoids it for float64",
        hypotheses=("one_pass_variance",),
        ops=("gn",),
        dtypes=("float64",),
        kinds=("large_mean",),
        checks=("forward",),
    ),
    KnownIssue(
        "ONNX's GroupNormalization (opset 21) computes its statistics in stash_type, float32 by default "
        "even for float64 input; stash_type=DOUBLE avoids it",
        hypotheses=("single_precision_compute",),
        ops=("gn",),
        dtypes=("float64",),
        checks=("forward",),
        impls=(DEFAULT_GN,),
    ),
    KnownIssue(
        "ONNX's GroupNormalization (opset 21) computes the variance in one pass, E[x^2] - E[x]^2, in "
        "stash_type (float32 by default), which cancels catastrophically when the mean is large or a group "
        "holds a few nearly equal values; stash_type=DOUBLE avoids it for float32 input",
        hypotheses=("one_pass_variance",),
        ops=("gn",),
        dtypes=("float32",),
        checks=("forward",),
        impls=(DEFAULT_GN,),
    ),
    KnownIssue(
        "ORT's com.microsoft SkipLayerNormalization and SkipSimplifiedLayerNormalization add X + skip in "
        "float32 and normalize that sum before it is rounded to float16 (their fourth output, the sum, is "
        "rounded): on large-mean data the output differs from the norm of the residual stream's value",
        hypotheses=("residual_sum_unrounded",),
        ops=("add_ln", "add_rms"),
        dtypes=("float16",),
        checks=("forward",),
    ),
)
