"""What a benchmark run produces: one immutable record per planned case, raw samples kept.

Statistics are derived from the samples on demand (pyperf and pytest-benchmark do the same), so
a record loaded back from JSON gives exactly the numbers it was rendered with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from normcheck.bench import stats
from normcheck.names import CONTIGUOUS, DtypeName, Layout, OpName
from normcheck.ops import fmt_shape

OK, SKIP, ERROR, OOM = "ok", "skip", "error", "oom"
STATUSES = (OK, SKIP, ERROR, OOM)
FORWARD, BACKWARD = "forward", "backward"
PASSES = (FORWARD, BACKWARD)


@dataclass(frozen=True)
class BenchCase:
    """One timed configuration. ``mode`` names how it runs: eager, torch.compile, tf.function,
    tf.function+XLA, jax.jit, or an ONNX Runtime session."""

    op: OpName
    shape: tuple[int, ...]
    params: str  # OpParams.label(): G=32, k=1, train, ...
    dtype: DtypeName
    framework: str
    impl: str
    device: str
    pass_: str
    mode: str
    layout: Layout = CONTIGUOUS
    model: str = ""  # where the shape comes from (ResNet-50 stage 2, Llama-2 7B hidden, ...); "" for --shape

    def key(self) -> tuple:
        """What identifies the case across runs (for --compare)."""
        return (
            self.op,
            self.shape,
            self.params,
            self.dtype,
            self.framework,
            self.impl,
            self.device,
            self.pass_,
            self.mode,
            self.layout,
        )

    def group(self) -> tuple:
        """Rows compared with each other: the same op, shape, dtype, pass and device."""
        return (self.op, self.shape, self.params, self.dtype, self.pass_, self.device)


@dataclass(frozen=True)
class Quantiles:
    """A measured row's median and 20th and 80th percentiles, in seconds per call."""

    median: float
    p20: float
    p80: float


@dataclass(frozen=True)
class BenchResult:
    """The measurement of one case, or why there is none (skip, error, out of memory)."""

    case: BenchCase
    status: str = OK
    reason: str = ""
    samples: tuple[float, ...] = ()  # seconds per call, each the mean of one block of ``block`` calls
    block: int = 1
    timer: str = ""  # "perf_counter", "perf_counter + sync, L2 flushed" or "cuda events, L2 flushed"
    converged: bool = True  # IQR/median fell under the threshold before the time cap
    first_call_s: float | None = None  # the first call: tracing and compilation where there are any
    compile_s: float | None = None  # first call minus the steady-state median, for compiled modes
    bytes_moved: int | None = None  # the model bytes of one call (see metrics.py)
    peak_memory: int | None = None  # bytes above the inputs; None: not measurable here
    copy_gbps: float | None = None  # the device's copy bandwidth, measured in the same run
    dram_gbps: float | None = None  # theoretical DRAM bandwidth (CUDA only)
    baseline_s: float | None = None  # median of the baseline framework's row of the same case
    threads: int | None = None
    notes: tuple[str, ...] = ()

    # -- statistics ---------------------------------------------------------------
    @property
    def measured(self) -> bool:
        return self.status == OK and bool(self.samples)

    @property
    def quantiles(self) -> Quantiles | None:
        """median, p20 and p80 together; None when the row was not measured."""
        if not self.measured:
            return None
        return Quantiles(
            stats.median(self.samples), stats.quantile(self.samples, 0.2), stats.quantile(self.samples, 0.8)
        )

    @property
    def median(self) -> float | None:
        return stats.median(self.samples) if self.measured else None

    @property
    def p20(self) -> float | None:
        return stats.quantile(self.samples, 0.2) if self.measured else None

    @property
    def p80(self) -> float | None:
        return stats.quantile(self.samples, 0.8) if self.measured else None

    @property
    def iqr(self) -> float | None:
        return stats.iqr(self.samples) if self.measured else None

    @property
    def relative_iqr(self) -> float | None:
        return stats.relative_iqr(self.samples) if self.measured else None

    @property
    def noisy(self) -> bool:
        r = self.relative_iqr
        return r is not None and r > stats.NOISY_IQR

    @property
    def gbps(self) -> float | None:
        m = self.median
        return None if m is None or not self.bytes_moved else self.bytes_moved / m / 1e9

    @property
    def pct_copy(self) -> float | None:
        g = self.gbps
        return None if g is None or not self.copy_gbps else 100.0 * g / self.copy_gbps

    @property
    def pct_dram(self) -> float | None:
        g = self.gbps
        return None if g is None or not self.dram_gbps else 100.0 * g / self.dram_gbps

    @property
    def speedup(self) -> float | None:
        """How many times faster than the baseline's row (above 1: faster)."""
        m = self.median
        return None if m is None or self.baseline_s is None else self.baseline_s / m

    def as_dict(self, samples: bool = False) -> dict[str, Any]:
        """A flat row for every renderer; ``samples`` adds the raw samples (JSON)."""
        c = self.case
        row: dict[str, Any] = {
            "op": c.op,
            "shape": fmt_shape(c.shape),
            "params": c.params,
            "model": c.model,
            "dtype": c.dtype,
            "framework": c.framework,
            "impl": c.impl,
            "device": c.device,
            "pass": c.pass_,
            "mode": c.mode,
            "layout": c.layout,
            "status": self.status,
            "reason": self.reason,
            "median_s": self.median,
            "p20_s": self.p20,
            "p80_s": self.p80,
            "iqr_s": self.iqr,
            "iqr_over_median": self.relative_iqr,
            "noisy": self.noisy if self.measured else None,
            "converged": self.converged if self.measured else None,
            "n_samples": len(self.samples),
            "block": self.block,
            "timer": self.timer,
            "first_call_s": self.first_call_s,
            "compile_s": self.compile_s,
            "bytes": self.bytes_moved,
            "gbps": self.gbps,
            "copy_gbps": self.copy_gbps,
            "pct_copy": self.pct_copy,
            "dram_gbps": self.dram_gbps,
            "pct_dram": self.pct_dram,
            "baseline_s": self.baseline_s,
            "speedup_vs_baseline": self.speedup,
            "peak_memory_bytes": self.peak_memory,
            "threads": self.threads,
            "notes": "; ".join(self.notes),
        }
        if samples:
            row["samples_s"] = list(self.samples)
        return row


@dataclass
class BenchReport:
    """A whole run: the environment it ran in, its settings and every record."""

    env: dict[str, Any]
    settings: dict[str, Any]
    results: list[BenchResult] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for r in self.results:
            out[r.status] += 1
        out["noisy"] = sum(r.noisy for r in self.results)
        return out
