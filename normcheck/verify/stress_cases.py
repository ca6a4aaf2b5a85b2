"""verify's stress profile: the cases kernel authors need and the default grid is too small for.

Each case names what it exposes. The default grid checks every known mistake on small shapes;
kernels break on what small shapes never reach: a grid index that wraps past 65535 rows
(apex#411), a vectorized path right only for some hidden sizes (vllm#44692), weight and bias
gradients summed over many rows in half precision (llm.c#476, Liger-Kernel#950), an output that
loses the channels-last memory format (pytorch#111824), strided and broadcast inputs, in-place
kernels, and 32-bit indexing past 2^31 elements.

Every case runs in the full set (``--device cuda``); those marked ``cpu`` form the CPU subset,
what CI can afford on two cores. A case whose tensors cannot fit in this machine's memory
(normcheck.memory_estimate) is planned as skip rows that say how much it needs; the 2^31-element
case is skipped on CPU, where it would run for hours, with the same estimate. docs/stress.md has
the table with each case's memory and time.
"""

from __future__ import annotations

from dataclasses import dataclass

from normcheck.memory_estimate import format_bytes, memory_problem, tensor_bytes_estimate
from normcheck.names import (
    CHANNELS_LAST,
    CONTIGUOUS,
    EXPANDED,
    IN_PLACE,
    REPEATED,
    SLICED,
    TRANSPOSED,
    DtypeName,
    InputKind,
    Layout,
    OpName,
)
from normcheck.ops import OpParams

STRESS: str = "stress"  # the profile's name (names.VERIFY_PROFILES)

# 2^16 + 3 rows: past the 65535 blocks a 16-bit row index or CUDA's gridDim.y reaches, and rows
# 65536 and 65537 exist to land on rows 0 and 1 when an index wraps
ROWS = 2**16 + 3
# hidden sizes around the powers of two kernels are tuned for: 4096 - 1 and + 1 leave a remainder
# of every vector width, 5120 (Llama-13B, 5 * 1024) is no power of two, 8191 is odd and large
HIDDEN = (4095, 4097, 5120, 8191)
HUGE = 2**31  # elements: past int32 indexing

FP32: tuple[DtypeName, ...] = ("float32",)
FP32_BF16: tuple[DtypeName, ...] = ("float32", "bfloat16")
FP32_HALF: tuple[DtypeName, ...] = ("float32", "bfloat16", "float16")
NORMAL: tuple[InputKind, ...] = ("normal",)


@dataclass(frozen=True)
class StressCase:
    """One case of the stress table: an op's shape and params, in these dtypes, input kinds and
    layouts (those an implementation can take: the strided views and the in-place call are the
    torch adapter's and its user forms'), and what it exposes."""

    op: OpName
    shape: tuple[int, ...]
    params: OpParams
    dtypes: tuple[DtypeName, ...]
    kinds: tuple[InputKind, ...]
    layouts: tuple[Layout, ...]
    exposes: str
    cpu: bool = True  # in the CPU subset; every case is in the full (CUDA) set

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def memory(self) -> int:
        """Bytes its tensors need (normcheck.memory_estimate's rule)."""
        return tensor_bytes_estimate(self.shape)


def _c(
    op: OpName,
    shape: tuple[int, ...],
    params: OpParams,
    dtypes: tuple[DtypeName, ...],
    layouts: tuple[Layout, ...],
    exposes: str,
    kinds: tuple[InputKind, ...] = NORMAL,
    cpu: bool = True,
) -> StressCase:
    return StressCase(op, shape, params, dtypes, kinds, layouts, exposes, cpu)


LAST = OpParams(normalized_ndim=1)  # layer/RMS norm over the hidden axis
BN = OpParams(running_stats=True)  # batch norm in training, running statistics tracked
ROWS_WHY = "rows past 2^16 (a grid index wrapping at 65536: apex#411)"
DGAMMA_WHY = ", and the weight/bias gradients summed over all of them (half accumulation: llm.c#476)"
HIDDEN_WHY = "a hidden size that is no power of two (a vectorized path dropping a remainder: vllm#44692)"
VIEWS_WHY = "a strided slice and a transposed view of the input (kernels that assume contiguous memory)"
STRIDED_WHY = VIEWS_WHY + ", and a stride-0 batch, one sample broadcast (kernels that index by their own strides)"
FORMAT_WHY = "channels_last in, channels_last out: the output's memory format (pytorch#111824)"
IN_PLACE_WHY = "an in-place kernel's result, read from its input tensors (vLLM's fused_add_rms_norm)"
PLAIN_AND_IN_PLACE: tuple[Layout, ...] = (CONTIGUOUS, IN_PLACE)
VIEWS: tuple[Layout, ...] = (SLICED, TRANSPOSED)
STRIDED: tuple[Layout, ...] = (*VIEWS, EXPANDED)  # the views on normal input, the broadcast on repeated input
STRIDED_KINDS: tuple[InputKind, ...] = ("normal", REPEATED)
_ROW_OPS: tuple[OpName, ...] = ("ln", "rms", "add_ln", "add_rms")
_CHANNEL_OPS: tuple[tuple[OpName, OpParams], ...] = (("bn", BN), ("in", OpParams()), ("gn", OpParams(groups=4)))

# fmt: off
STRESS_CASES: tuple[StressCase, ...] = (
    # rows past 2^16, and the weight and bias gradients summed over all of them
    *(_c(op, (ROWS, 8), LAST, FP32_HALF, PLAIN_AND_IN_PLACE, ROWS_WHY + DGAMMA_WHY) for op in _ROW_OPS),
    _c("bn", (ROWS, 8), BN, FP32_BF16, (CONTIGUOUS,), "a channel's statistics and gradients over 2^16 + 3 values"),
    _c("gn", (2049, 32, 2, 2), OpParams(groups=32), FP32_BF16, (CONTIGUOUS,), "65568 groups past 2^16 (apex#411)"),
    _c("in", (2049, 32, 2, 2), OpParams(), FP32, (CONTIGUOUS,), "65568 instances past 2^16 (apex#411)"),
    *(_c(op, (ROWS, 1024), LAST, FP32_HALF, (CONTIGUOUS,), ROWS_WHY + DGAMMA_WHY, cpu=False) for op in ("ln", "rms")),
    # hidden sizes that are no power of two, at scale
    *(_c(op, (16, h), LAST, FP32_BF16, PLAIN_AND_IN_PLACE, HIDDEN_WHY) for h in HIDDEN for op in _ROW_OPS),
    *(_c(op, (512, h), LAST, FP32_HALF, (CONTIGUOUS,), HIDDEN_WHY, cpu=False) for h in HIDDEN for op in ("ln", "rms")),
    # strided and broadcast inputs
    *(_c(op, (8, 16, 96), LAST, FP32_BF16, STRIDED, STRIDED_WHY, STRIDED_KINDS) for op in _ROW_OPS),
    _c("ln", (8, 6, 20, 24), OpParams(normalized_ndim=3), FP32_BF16, VIEWS, VIEWS_WHY),
    *(_c(op, (4, 12, 10, 12), p, FP32_BF16, STRIDED, STRIDED_WHY, STRIDED_KINDS) for op, p in _CHANNEL_OPS),
    # channels_last kept, in 4-D and 5-D (the memory_format check)
    *(_c(op, (8, 64, 16, 16), p, FP32_BF16, (CHANNELS_LAST,), FORMAT_WHY) for op, p in _CHANNEL_OPS),
    *(_c(op, (2, 16, 6, 8, 10), p, FP32, (CHANNELS_LAST,), FORMAT_WHY) for op, p in _CHANNEL_OPS),
    *(_c(op, (32, 256, 56, 56), p, FP32_BF16, (CHANNELS_LAST,), FORMAT_WHY, cpu=False) for op, p in _CHANNEL_OPS),
    # past int32 indexing: 2^31 elements
    _c("ln", (2**21, 1024), LAST, ("bfloat16",), (CONTIGUOUS,), "2^31 elements (int32 indexing)", cpu=False),
)
# fmt: on
STRESS_OPS: tuple[OpName, ...] = tuple(dict.fromkeys(c.op for c in STRESS_CASES))  # the ops it has cases of


def stress_cases(op: str, device: str = "cpu") -> list[StressCase]:
    """The stress cases of ``op`` planned on ``device``: every one on CUDA; on CPU the CPU subset
    and the 2^31-element case (planned there as skip rows, ``stress_skip``)."""
    full = not device.startswith("cpu")
    return [c for c in STRESS_CASES if c.op == op and (full or c.cpu or c.numel >= HUGE)]


def stress_case(op: str, shape: tuple[int, ...], params: OpParams) -> StressCase | None:
    """The stress case of ``op`` on ``shape`` with ``params`` (params as planned, the framework's
    case_params aside), or None."""
    return next((c for c in STRESS_CASES if c.op == op and c.shape == tuple(shape) and c.params == params), None)


def stress_skip(case: StressCase, device: str, available: int | None = None) -> str | None:
    """Why ``case`` is not run here (its skip rows' message), or None: tensors that cannot fit in
    this machine's memory, or the 2^31-element case on a CPU."""
    problem = memory_problem(case.shape, available)
    if problem is not None:
        return f"{problem} (a stress case of {case.numel} elements: {case.exposes})"
    if device.startswith("cpu") and not case.cpu:
        need = format_bytes(case.memory)
        return f"{case.numel} elements run with --device cuda only (about {need} for the tensors, hours on a CPU)"
    return None


def stress_layouts(case: StressCase, kind: str, offered: tuple[Layout, ...]) -> tuple[Layout, ...]:
    """The layouts a unit of ``case`` on input ``kind`` runs in, of those an implementation
    ``offered``: the case's own; the expanded layout takes repeated input, and only it does."""
    return tuple(layout for layout in case.layouts if layout in offered and (layout == EXPANDED) == (kind == REPEATED))
