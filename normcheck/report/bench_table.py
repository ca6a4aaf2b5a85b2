"""The bench run as rich tables: an environment header, then one table per op and shape."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from normcheck.bench.compare import Comparison
from normcheck.bench.records import OK, BenchReport, BenchResult
from normcheck.ops import fmt_shape
from normcheck.report import bench_format as f
from normcheck.report.table import OP_TITLES

STATUS_STYLE = {"skip": "dim", "error": "bold magenta", "oom": "bold red"}


def render_bench_table(report: BenchReport, comparison: Comparison | None = None) -> Group:
    parts: list[RenderableType] = [header(report)]
    groups: dict[tuple, list[BenchResult]] = defaultdict(list)
    for r in report.results:
        c = r.case
        groups[(c.op, c.shape, c.params, c.dtype, c.device, c.model)].append(r)
    cuda = any(r.dram_gbps for r in report.results)
    baseline = report.settings.get("baseline")
    for (op, shape, params, dtype, device, model), rows in groups.items():
        title = f"{OP_TITLES.get(op, op)} ({op})  {fmt_shape(shape)}  {params}  {dtype}  {device}"
        parts.append(_table(title + (f"  — {model}" if model else ""), rows, cuda, baseline))
    if comparison is not None:
        parts.append(comparison_table(comparison))
    if report.interrupted:
        parts.append(Text("interrupted: the rows above are what was measured before Ctrl-C", style="bold yellow"))
    return Group(*parts)


def header(report: BenchReport) -> Text:
    env, s = report.env, report.settings
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    lines = [
        f"normcheck bench on {env.get('cpu', '?')}, {s.get('threads')} thread(s) pinned to CPUs "
        f"{env.get('cpus_pinned')}; device {env.get('device')}"
    ]
    gpu = env.get("gpu")
    if gpu:
        lines.append(
            f"GPU {gpu.get('name')} ({f.nbytes(gpu.get('memory_bytes'))}, CUDA {gpu.get('cuda')}); "
            f"theoretical DRAM {f.number(s.get('dram_gbps'), '.0f')} GB/s"
        )
    copy = s.get("copy_bandwidth") or {}
    if copy:
        lines.append(f"copy bandwidth {copy['gbps']:.1f} GB/s ({copy['how']})")
    lines.append(versions)
    lines.append(
        "GB/s = model bytes / median; forward "
        + s.get("bytes_formula", {}).get("forward", "")
        + "; backward "
        + s.get("bytes_formula", {}).get("backward", "")
    )
    lines.extend(s.get("notes", []))
    return Text("\n".join(lines), style="dim")


def _table(title: str, rows: list[BenchResult], cuda: bool, baseline: str | None) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["pass", "framework", "impl", "mode", "median", "p20 – p80", "IQR/med", "GB/s", "% copy"]
    if cuda:
        columns.append("% DRAM")
    columns += [f"vs {baseline}" if baseline else "vs baseline", "peak mem", "compile", "note"]
    for col in columns:
        right = col in ("median", "IQR/med", "GB/s", "% copy", "% DRAM", "peak mem", "compile") or col.startswith("vs")
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for r in rows:
        c = r.case
        style = STATUS_STYLE.get(r.status, "yellow" if r.noisy else "")
        cells = [
            c.pass_,
            c.framework,
            c.impl,
            c.mode,
            f.seconds(r.median),
            f.spread(r),
            f.number(None if r.relative_iqr is None else 100 * r.relative_iqr, ".1f", "%"),
            f.number(r.gbps, ".1f"),
            f.number(r.pct_copy, ".0f", "%"),
        ]
        if cuda:
            cells.append(f.number(r.pct_dram, ".0f", "%"))
        cells += [f.speedup(r), f.nbytes(r.peak_memory), f.seconds(r.compile_s), f.note(r)]
        table.add_row(*[Text(x, style=style if r.status != OK or r.noisy else "") for x in cells])
    return table


def comparison_table(cmp: Comparison) -> Group:
    limit = f"{100 * cmp.threshold:g}%"
    if not cmp.slower:
        text = (
            f"compare: no case slower by more than {limit} beyond the measured spread "
            f"({len(cmp.faster)} faster, {cmp.unchanged} unchanged)"
        )
        return Group(Text(text, style="green"), *_env_notes(cmp))
    table = Table(
        title=f"slower than before by more than {limit}, beyond the measured spread",
        title_justify="left",
        title_style="bold red",
    )
    for col in ("op", "shape", "dtype", "pass", "framework", "impl", "mode", "before", "now", "change"):
        table.add_column(col)
    for ch in cmp.slower:
        c = ch.new.case
        table.add_row(
            c.op,
            fmt_shape(c.shape),
            c.dtype,
            c.pass_,
            c.framework,
            c.impl,
            c.mode,
            f.seconds(ch.old.median),
            f.seconds(ch.new.median),
            f"+{100 * (ch.ratio - 1):.0f}%",
        )
    return Group(table, *_env_notes(cmp))


def _env_notes(cmp: Comparison) -> list[Text]:
    out = [Text(f"the runs differ in {d}", style="yellow") for d in cmp.env_differences]
    if cmp.only_old:
        out.append(Text(f"{len(cmp.only_old)} case(s) measured before were not measured now", style="yellow"))
    return out
