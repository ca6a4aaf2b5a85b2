"""The domain's names, as types and as the tuples the command line offers; kept free of heavy
imports so --help stays instant."""

from __future__ import annotations

from typing import Final, Literal, get_args

# the five ops every framework declares, checked by default
BaseOpName = Literal["bn", "ln", "in", "gn", "rms"]
# fused residual add + norm (vLLM, TransformerEngine): checked when asked for by name
FusedOpName = Literal["add_rms", "add_ln"]
OpName = Literal[BaseOpName, FusedOpName]
DtypeName = Literal["float64", "float32", "float16", "bfloat16"]
InputKind = Literal["normal", "large_mean", "constant", "tiny_scale", "half_range"]
# where a case's channels are: "contiguous" is the canonical channels-first tensor
Layout = Literal["contiguous", "channels_last"]
Status = Literal["pass", "fail", "known", "error", "skip"]

OP_NAMES: tuple[OpName, ...] = get_args(BaseOpName)  # the default op list
FUSED_OP_NAMES: tuple[OpName, ...] = get_args(FusedOpName)
ALL_OP_NAMES: tuple[OpName, ...] = OP_NAMES + FUSED_OP_NAMES  # every op --op accepts
DTYPE_NAMES: tuple[DtypeName, ...] = get_args(DtypeName)
DEFAULT_DTYPES: tuple[DtypeName, ...] = ("float32", "float16", "bfloat16", "float64")
KIND_NAMES: tuple[InputKind, ...] = get_args(InputKind)
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
STATUSES: tuple[Status, ...] = ("pass", "fail", "known", "error", "skip")

PROFILES = ("default", "quick")  # verify's and bench's: every default case, or a few chosen ones

DEFAULT_TIMEOUT = 60.0  # seconds one verify case may run in a worker before it is an error row

CONTIGUOUS: Final = "contiguous"
CHANNELS_LAST: Final = "channels_last"
