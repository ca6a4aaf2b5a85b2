"""Markdown of a bench run, for pull-request comments and job summaries."""

from __future__ import annotations

from normcheck.bench.compare import Comparison
from normcheck.bench.records import BenchReport
from normcheck.ops import fmt_shape
from normcheck.report import bench_format as f
from normcheck.report.markdown import markdown_table

COLUMNS = (
    "op",
    "shape",
    "dtype",
    "pass",
    "framework",
    "impl",
    "mode",
    "median",
    "p20 – p80",
    "GB/s",
    "% copy",
    "vs baseline",
    "peak mem",
    "note",
)


def render_bench_markdown(report: BenchReport, comparison: Comparison | None = None) -> str:
    env, s = report.env, report.settings
    copy = s.get("copy_bandwidth") or {}
    lines = [
        "## normcheck bench",
        "",
        f"{env.get('cpu')}, {s.get('threads')} thread(s); device {env.get('device')}"
        + (f", GPU {env['gpu']['name']}" if env.get("gpu") else "")
        + (f"; copy bandwidth {copy['gbps']:.1f} GB/s" if copy else ""),
        "",
    ]
    rows = []
    for r in report.results:
        c = r.case
        rows.append(
            {
                "op": c.op,
                "shape": fmt_shape(c.shape),
                "dtype": c.dtype,
                "pass": c.pass_,
                "framework": c.framework,
                "impl": c.impl,
                "mode": c.mode,
                "median": f.seconds(r.median),
                "p20 – p80": f.spread(r),
                "GB/s": f.number(r.gbps, ".1f"),
                "% copy": f.number(r.pct_copy, ".0f", "%"),
                "vs baseline": f.speedup(r),
                "peak mem": f.nbytes(r.peak_memory),
                "note": f.note(r),
            }
        )
    lines.append(markdown_table(rows, COLUMNS))
    if comparison is not None and comparison.slower:
        lines += ["", f"### Slower by more than {100 * comparison.threshold:g}% beyond the measured spread", ""]
        slower = [
            {
                "case": f"{ch.new.case.op} {fmt_shape(ch.new.case.shape)} {ch.new.case.dtype} "
                f"{ch.new.case.pass_} {ch.new.case.impl} {ch.new.case.mode}",
                "before": f.seconds(ch.old.median),
                "now": f.seconds(ch.new.median),
                "change": f"+{100 * (ch.ratio - 1):.0f}%",
            }
            for ch in comparison.slower
        ]
        lines.append(markdown_table(slower, ("case", "before", "now", "change")))
    if report.interrupted:
        lines += ["", "_Interrupted: the rows above are what was measured before Ctrl-C._"]
    return "\n".join(lines) + "\n"
