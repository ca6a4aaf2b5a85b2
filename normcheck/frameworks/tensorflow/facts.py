"""TensorFlow, as data: the conventions of its Keras 3 layers and the known defects of its raw ops.

Imports no framework: the parent process judges with it, and ``normcheck conventions`` prints it.
"""

from __future__ import annotations

from normcheck.conventions import BIASED, CHANNELS_LAST, OLD, Convention
from normcheck.frameworks.base import KnownIssue

RAW_NAME = "tf.nn.moments+batch_normalization"
RAW_FLOAT32_NAME = "tf.nn.moments+batch_normalization (float32 compute)"
RAW_OPS = ("bn", "ln", "in", "gn")  # RMS norm has no moments form

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
