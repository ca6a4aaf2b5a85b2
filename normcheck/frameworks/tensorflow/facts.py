"""TensorFlow, as data: the conventions of its Keras 3 layers and the known defects of its raw ops.

Imports no framework: the parent process judges with it, and ``normcheck conventions`` prints it.
"""

from __future__ import annotations

from typing import Any

from normcheck.conventions import BIASED, CHANNELS_LAST, OLD, Convention
from normcheck.frameworks.base import KnownIssue

RAW_NAME = "tf.nn.moments+batch_normalization"
RAW_FLOAT32_NAME = "tf.nn.moments+batch_normalization (float32 compute)"
RAW_OPS = ("bn", "ln", "in", "gn")  # RMS norm has no moments form
# Keras's other RMS norm; not one (KNOWN_ISSUES): it divides by sqrt(Var[x] + eps)
RMS_SCALING_NAME = "keras.layers.LayerNormalization(rms_scaling=True)"
# the batch norm of multi-replica training; on one replica too its statistics are one-pass (KNOWN_ISSUES)
SYNCHRONIZED_NAME = "keras.layers.BatchNormalization(synchronized=True)"
CHANNEL_OPS = ("bn", "in", "gn")
KERAS_NAMES = {
    "bn": "keras.layers.BatchNormalization",
    "ln": "keras.layers.LayerNormalization",
    "in": "keras.layers.GroupNormalization(groups=-1)",
    "gn": "keras.layers.GroupNormalization",
    "rms": "keras.layers.RMSNormalization",
}

TENSORFLOW = {
    "bn": Convention(
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
    "ln": Convention(
        "tensorflow",
        "ln",
        api="keras.layers.LayerNormalization",
        eps=1e-3,
        layout=CHANNELS_LAST,
        reduction="`axis` (-1; any list of axes)",
        affine="shape of the normalized axes, on",
    ),
    "in": Convention(
        "tensorflow",
        "in",
        api="keras.layers.GroupNormalization(groups=-1)",
        eps=1e-3,
        layout=CHANNELS_LAST,
        reduction="spatial axes, per sample and channel",
        affine="(C,), on",
        notes="no instance-norm layer: a group per channel; no running statistics",
    ),
    "gn": Convention(
        "tensorflow",
        "gn",
        api="keras.layers.GroupNormalization",
        eps=1e-3,
        layout=CHANNELS_LAST,
        reduction="per sample, G contiguous channel groups × other axes",
        affine="(C,), on",
        groups=32,
    ),
    "rms": Convention(
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

CONVENTIONS = {"tensorflow": TENSORFLOW}

HALF = ("float16", "bfloat16")
# Established with a NumPy model of the raw graph that rounds every op's result to the dtype
# (float16 moments in float32, then rounded; TensorFlow's float16 sums): on the default matrix it
# reproduces all 246 failing forward checks bit for bit (errors against the reference up to 4.5,
# against the model 0) and 365 of the 384 failing gradient checks within the case's tolerance. The
# same graph computed in float32 (RAW_FLOAT32_NAME) passes every check.
KNOWN_ISSUES: tuple[KnownIssue, ...] = (
    KnownIssue(
        "keras.layers.LayerNormalization(rms_scaling=True) scales x by 1/sqrt(Var[x] + eps), the "
        "variance about the mean, not by the root mean square its documentation describes "
        "(keras-team/keras#21234, open): it equals RMS norm only where the mean is 0; "
        "keras.layers.RMSNormalization is the RMS norm",
        hypotheses=("rms_from_variance",),
        ops=("rms",),
        devices=("cpu", "cuda"),
        impls=(RMS_SCALING_NAME,),
    ),
    KnownIssue(
        "keras.layers.BatchNormalization(synchronized=True) computes the batch variance in one pass, "
        "max(E[x²] − E[x]², 0), on one replica too (its cross-replica moments): data with a large mean "
        "lose the variance to cancellation; synchronized=False (the default) computes it in two passes",
        hypotheses=("one_pass_variance",),
        ops=("bn",),
        devices=("cpu", "cuda"),
        kinds=("large_mean",),
        impls=(SYNCHRONIZED_NAME,),
    ),
    KnownIssue(
        "tf.nn.moments returns the float16 variance rounded from float32, and data of magnitude "
        "6e4 have a variance beyond float16's range: it becomes inf, the output collapses to the "
        "bias and the gradients are NaN; casting the input to float32 first avoids it",
        hypotheses=("half_accumulation",),
        ops=RAW_OPS,
        dtypes=("float16",),
        kinds=("half_range",),
        impls=(RAW_NAME,),
    ),
    KnownIssue(
        "tf.nn.moments and tf.nn.batch_normalization compute in the input dtype: the statistics "
        "are rounded to float16 (bfloat16 computes them in bfloat16), the normalization "
        "x * inv + (offset - mean * inv) is evaluated in the dtype, and float16 gradient sums "
        "accumulate in float16; casting half inputs to float32 first avoids it",
        hypotheses=("half_accumulation", "stats_in_input_dtype"),
        ops=RAW_OPS,
        dtypes=HALF,
        impls=(RAW_NAME,),
    ),
)


# The Keras 3 constructors' defaults for the arguments normcheck passes (checked against the
# installed Keras by tests/frameworks/test_tensorflow_forms.py); eps and momentum come from the
# conventions. Read by the keras_layer form and its reproducers.
KERAS_DEFAULTS: dict[str, dict[str, Any]] = {
    "bn": {
        "axis": -1,
        "momentum": TENSORFLOW["bn"].momentum,
        "epsilon": TENSORFLOW["bn"].eps,
        "center": True,
        "scale": True,
    },
    "ln": {"axis": -1, "epsilon": TENSORFLOW["ln"].eps, "center": True, "scale": True},
    "in": {
        "groups": TENSORFLOW["gn"].groups,
        "axis": -1,
        "epsilon": TENSORFLOW["in"].eps,
        "center": True,
        "scale": True,
    },
    "gn": {
        "groups": TENSORFLOW["gn"].groups,
        "axis": -1,
        "epsilon": TENSORFLOW["gn"].eps,
        "center": True,
        "scale": True,
    },
    "rms": {"axis": -1, "epsilon": TENSORFLOW["rms"].eps},
}
KERAS_OPTIONAL = ("epsilon", "momentum")  # left out in the defaults call style whatever the case
# the names a user's Keras layer may give its variables
VARIABLE_NAMES = {
    "weight": ("gamma", "weight", "scale"),
    "bias": ("beta", "bias"),
    "running_mean": ("moving_mean", "running_mean"),
    "running_var": ("moving_variance", "moving_var", "running_var"),
}
