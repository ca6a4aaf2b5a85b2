"""Plots of a benchmark run: time per call and GB/s against input size, one row per op and pass.

Left panel: median time per call (log-log), the p20–p80 band shaded. Right panel: GB/s with the
copy bandwidth measured in the same run (and, on CUDA, the theoretical DRAM bandwidth) as dashed
lines. One line per framework, implementation, mode and dtype. Only measured rows are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from normcheck.bench.records import PASSES, BenchResult
from normcheck.errors import UsageError
from normcheck.names import OP_NAMES
from normcheck.report._xml import xml_safe
from normcheck.report.output_file import write_output

FORMATS = {".png": "png", ".svg": "svg"}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
ROW_HEIGHT, WIDTH = 4.0, 13.0


def plot(results: list[BenchResult], path: Path) -> None:
    """Write the plot of ``results`` to ``path`` (.png or .svg), whole or not at all."""
    path = Path(path)
    fmt = plot_format(path)
    measured = [r for r in results if r.measured]
    if not measured:
        raise UsageError("nothing was measured to plot")
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'normcheck[plot]'") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _rows(measured)
    colors = _colors(measured, matplotlib)
    # a Figure with its own Agg canvas: no pyplot, so no window and no global backend switch
    fig = Figure(figsize=(WIDTH, ROW_HEIGHT * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (key, rs), (ax_time, ax_bw) in zip(rows.items(), axes, strict=True):
        _draw_row(key, rs, ax_time, ax_bw, colors)
    # SVG text stays text (legend labels can be searched and selected)
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        write_output(path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"))


def plot_format(path: Path) -> str:
    """The matplotlib format of ``path``'s suffix; a UsageError for any but .png and .svg."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"--plot takes a .png or .svg file, not {Path(path).name!r}")
    return fmt


def input_bytes(result: BenchResult) -> int:
    """The size of the op's input x: elements times the dtype's item size."""
    c = result.case
    return math.prod(c.shape) * _itemsize(c.dtype)


def line_label(result: BenchResult) -> str:
    c = result.case
    return xml_safe(f"{c.framework} {c.impl} {c.mode} {c.dtype}")  # SVG keeps labels as XML text


# -- grouping -----------------------------------------------------------------------
def _itemsize(dtype: str) -> int:
    if dtype in ITEMSIZE:
        return ITEMSIZE[dtype]
    import numpy as np

    return int(np.dtype(dtype).itemsize)


def _rows(measured: list[BenchResult]) -> dict[tuple[str, str], list[BenchResult]]:
    """Results by (op, pass), ops in the command line's order, forward before backward."""
    rows: dict[tuple[str, str], list[BenchResult]] = {}
    for r in measured:
        rows.setdefault((r.case.op, r.case.pass_), []).append(r)

    def order(key: tuple[str, str]) -> tuple[int, int, str]:
        op, pass_ = key
        return (
            OP_NAMES.index(op) if op in OP_NAMES else len(OP_NAMES),
            PASSES.index(pass_) if pass_ in PASSES else len(PASSES),
            op + pass_,
        )

    return {k: rows[k] for k in sorted(rows, key=order)}


def _lines(results: list[BenchResult]) -> dict[str, list[BenchResult]]:
    """Results by line label (with the device where a row mixes devices), each sorted by size."""
    devices = {r.case.device for r in results}
    lines: dict[str, list[BenchResult]] = {}
    for r in results:
        label = line_label(r) + (f" {r.case.device}" if len(devices) > 1 else "")
        lines.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: (input_bytes(r), r.case.shape)) for k, v in sorted(lines.items())}


def _colors(measured: list[BenchResult], matplotlib: Any) -> dict[str, Any]:
    """One colour per (framework, impl, mode, dtype), the same in every row."""
    labels = sorted({line_label(r) for r in measured})
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(labels) > len(cycle):
        cmap = matplotlib.colormaps["tab20"]
        return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
    return {label: cycle[i] for i, label in enumerate(labels)}


# -- drawing -------------------------------------------------------------------------
def _title(key: tuple[str, str], results: list[BenchResult]) -> str:
    from normcheck.ops import OPS

    op, pass_ = key
    name = OPS[op].title if op in OPS else op
    dtypes = ", ".join(sorted({r.case.dtype for r in results}))
    devices = ", ".join(sorted({r.case.device for r in results}))
    return xml_safe(f"{name} {pass_} · {dtypes} · {devices}")


def _draw_row(
    key: tuple[str, str], results: list[BenchResult], ax_time: Any, ax_bw: Any, colors: dict[str, Any]
) -> None:
    title = _title(key, results)
    for label, rs in _lines(results).items():
        color = colors[line_label(rs[0])]
        x = [input_bytes(r) for r in rs]
        ax_time.plot(x, [r.median for r in rs], marker="o", ms=4, color=color, label=label)
        ax_time.fill_between(x, [r.p20 for r in rs], [r.p80 for r in rs], color=color, alpha=0.2, lw=0)
        # the rows with a bandwidth (r.gbps): measured, with the bytes one call moves
        bw = [(input_bytes(r), n, q) for r in rs if (n := r.bytes_moved) and (q := r.quantiles) is not None]
        if bw:
            x_bw = [b for b, _, _ in bw]
            ax_bw.plot(x_bw, [n / q.median / 1e9 for _, n, q in bw], marker="o", ms=4, color=color, label=label)
            ax_bw.fill_between(
                x_bw,
                [n / q.p80 / 1e9 for _, n, q in bw],
                [n / q.p20 / 1e9 for _, n, q in bw],
                color=color,
                alpha=0.2,
                lw=0,
            )
    _reference_lines(ax_bw, results)
    _axes(ax_time, f"{title}: time per call", "median time per call (p20–p80 shaded)", _fmt_seconds, log_y=True)
    _axes(ax_bw, f"{title}: bandwidth", "GB/s (model bytes / median)", None, log_y=False)
    ax_bw.margins(y=0.1)
    ax_bw.set_ylim(bottom=0)
    _legend(ax_time, ax_bw)


def _legend(ax_time: Any, ax_bw: Any) -> None:
    """Every line of the row (a line without GB/s too) and the reference lines, right of the row."""
    entries: dict[str, Any] = {}
    for ax in (ax_time, ax_bw):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    ax_bw.legend(
        list(entries.values()),
        list(entries),
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize="small",
        frameon=False,
    )


def _reference_lines(ax: Any, results: list[BenchResult]) -> None:
    """The copy bandwidth of each device and, on CUDA, its theoretical DRAM bandwidth."""
    by_device: dict[str, list[BenchResult]] = {}
    for r in results:
        by_device.setdefault(r.case.device, []).append(r)
    several = len(by_device) > 1
    for device, rs in sorted(by_device.items()):
        suffix = f" ({device})" if several else ""
        copy = _median([r.copy_gbps for r in rs if r.copy_gbps])
        if copy is not None:
            ax.axhline(copy, ls="--", lw=1.2, color="0.35", label="copy bandwidth" + suffix)
        dram = _median([r.dram_gbps for r in rs if r.dram_gbps])
        if dram is not None:
            ax.axhline(dram, ls=(0, (2, 2)), lw=1.2, color="0.1", label="theoretical DRAM bandwidth" + suffix)


def _median(values: list[float | None]) -> float | None:
    vs = sorted(v for v in values if v is not None)
    return vs[len(vs) // 2] if vs else None


def _axes(ax: Any, title: str, ylabel: str, yfmt: Callable[[float], str] | None, log_y: bool) -> None:
    ax.set_xscale("log")
    _log_labels(ax.xaxis, _fmt_bytes)
    if log_y:
        ax.set_yscale("log")
        _log_labels(ax.yaxis, yfmt or "{:g}".format)
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("input size (bytes)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def _log_labels(axis: Any, fmt: Callable[[float], str]) -> None:
    """Powers of ten labelled with units; 2x and 5x too where the axis spans under two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def minor(v: float, _pos: Any) -> str:
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or math.log10(hi / lo) >= 2:
            return ""
        mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        return fmt(v) if mantissa in (2.0, 5.0) else ""

    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _fmt_bytes(v: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= scale:
            return f"{v / scale:g} {unit}"
    return f"{v:g} B"


def _fmt_seconds(v: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v / 1e-9:.3g} ns"
