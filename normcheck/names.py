"""The domain's names, as types and as the tuples the command line offers; kept free of heavy
imports so --help stays instant."""

from __future__ import annotations

from typing import Final, Literal, get_args

# the five ops every framework declares, checked by default
BaseOpName = Literal["bn", "ln", "in", "gn", "rms"]
# fused residual add + norm (vLLM, TransformerEngine): checked when asked for by name
FusedOpName = Literal["add_rms", "add_ln"]
# adaptive layer norm (DiT's adaLN): per-sample shift and scale; checked when asked for by name
AdaptiveOpName = Literal["adaln"]
# Weight Standardization (a convolution whose weight is standardized), alone and followed by
# group norm (GN+WS); checked when asked for by name
WSOpName = Literal["ws", "ws_gn"]
OpName = Literal[BaseOpName, FusedOpName, AdaptiveOpName, WSOpName]
DtypeName = Literal["float64", "float32", "float16", "bfloat16"]
BaseKind = Literal["normal", "large_mean", "constant", "tiny_scale", "half_range"]
# the stress profile's own kind (normcheck.verify.stress_cases): every sample along the batch axis
# the same, so the input can be one sample broadcast with stride 0 (the "expanded" layout)
StressKind = Literal["repeated"]
InputKind = Literal[BaseKind, StressKind]
# where a case's channels are: "contiguous" is the canonical channels-first tensor
BaseLayout = Literal["contiguous", "channels_last"]
# the stress profile's views and calls of the input (normcheck.verify.stress_cases): a strided
# slice, a transposed view, a stride-0 batch, and a function writing its result into its input
StressLayout = Literal["sliced", "transposed", "expanded", "in_place"]
Layout = Literal[BaseLayout, StressLayout]
Status = Literal["pass", "fail", "known", "error", "skip"]

OP_NAMES: tuple[OpName, ...] = get_args(BaseOpName)  # the default op list
FUSED_OP_NAMES: tuple[OpName, ...] = get_args(FusedOpName)
ADAPTIVE_OP_NAMES: tuple[OpName, ...] = get_args(AdaptiveOpName)
WS_OP_NAMES: tuple[OpName, ...] = get_args(WSOpName)
# every op --op accepts
ALL_OP_NAMES: tuple[OpName, ...] = OP_NAMES + FUSED_OP_NAMES + ADAPTIVE_OP_NAMES + WS_OP_NAMES
DTYPE_NAMES: tuple[DtypeName, ...] = get_args(DtypeName)
DEFAULT_DTYPES: tuple[DtypeName, ...] = ("float32", "float16", "bfloat16", "float64")
KIND_NAMES: tuple[InputKind, ...] = get_args(BaseKind)  # the kinds --input offers outside the stress profile
STRESS_KIND_NAMES: tuple[InputKind, ...] = get_args(StressKind)
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
STRESS_LAYOUTS: tuple[Layout, ...] = get_args(StressLayout)
STATUSES: tuple[Status, ...] = ("pass", "fail", "known", "error", "skip")

PROFILES = ("default", "quick")  # verify's and bench's: every default case, or a few chosen ones
# verify's alone: "stress", the large and strided cases of normcheck.verify.stress_cases
VERIFY_PROFILES = (*PROFILES, "stress")
# named precision policies of RMS norm (normcheck.policies): --policy checks ulp-level parity with one
POLICY_NAMES = ("llama", "gemma", "t5", "native", "fp32-weight")

DEFAULT_TIMEOUT = 60.0  # seconds one verify case may run in a worker before it is an error row

CONTIGUOUS: Final = "contiguous"
CHANNELS_LAST: Final = "channels_last"
SLICED: Final = "sliced"  # x = buf[..., ::2], a buffer twice as wide: stride 2 on the last axis
TRANSPOSED: Final = "transposed"  # x = buf.transpose(-1, -2) of a contiguous buf: the last two axes' strides swapped
EXPANDED: Final = "expanded"  # x = x[:1].expand(N, ...): stride 0 on the batch axis (REPEATED input only)
IN_PLACE: Final = "in_place"  # a function writing its result into its input tensors, called without autograd
REPEATED: Final = "repeated"
