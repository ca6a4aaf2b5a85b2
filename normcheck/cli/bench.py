"""normcheck bench: time each framework's normalization ops against the machine's bandwidth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from normcheck.cli._common import UsageError, emit, fail_usage, say, stderr_is_tty
from normcheck.frameworks import FORMS, FUNCTION, REGISTRY
from normcheck.names import ALL_OP_NAMES, DTYPE_NAMES, OP_NAMES

if TYPE_CHECKING:  # the bench modules load on use, so `normcheck --help` stays light
    from normcheck.bench.compare import Comparison
    from normcheck.bench.plan import BenchRequest
    from normcheck.bench.records import BenchReport, BenchResult
    from normcheck.bench.timer import TimerSettings

FORMATS = ("table", "csv", "json", "markdown", "github")
FRAMEWORKS = ", ".join(REGISTRY)
# the frameworks a function given to --impl may be written for
FUNCTION_FRAMEWORKS = " or ".join(dict.fromkeys(f.framework for f in FORMS.values() if f.kind == FUNCTION))


def bench(
    op: Annotated[
        str | None,
        typer.Option(
            help=f"Ops, comma list of {', '.join(ALL_OP_NAMES)} (add_rms, add_ln: fused residual add + norm; "
            f"adaln: DiT's adaptive layer norm; ws, ws_gn: Weight Standardization). Default: {', '.join(OP_NAMES)}."
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            help="An op variant, as verify's: gemma (rms, add_rms), nobias (ln, add_ln), cumulative (bn), "
            "paper (ws, ws_gn). Only implementations that compute it are timed."
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="Time your norm with FP8-quantized output (--impl, --op rms or ln): e4m3 or e5m2; the forward "
            "pass is timed, up to the (q, scale) your code returns."
        ),
    ] = None,
    scale: Annotated[
        str | None, typer.Option(help="With --quantize: row (default), tensor or static, as verify's.")
    ] = None,
    framework: Annotated[
        str | None,
        typer.Option(
            help=f"Frameworks, comma list of {FRAMEWORKS}. Default: every installed one. With a function "
            f"given to --impl, name the one it is written for ({FUNCTION_FRAMEWORKS}) here."
        ),
    ] = None,
    impl: Annotated[
        str | None,
        typer.Option(
            help="Your implementation, timed beside the built-ins: package.module:NAME or "
            "path/to/file.py:NAME (a function, a torch.nn.Module, keras Layer or flax Module class)."
        ),
    ] = None,
    backward: Annotated[str | None, typer.Option(help="With --style cs231n: the backward function, FILE:NAME.")] = None,
    style: Annotated[str | None, typer.Option(help="cs231n: NumPy forward/backward functions.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda:N).")] = "cpu",
    dtype: Annotated[
        str | None, typer.Option(help=f"Dtypes, comma list of {', '.join(DTYPE_NAMES)}. Default: float32.")
    ] = None,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            help="Input shape, e.g. 8,256,56,56 or 512,4096 (repeatable). Default: each op's shapes from real models."
        ),
    ] = None,
    pass_: Annotated[str, typer.Option("--pass", help="forward, backward, or both (each timed on its own).")] = "both",
    mode: Annotated[
        str,
        typer.Option(
            help="eager, compiled, or both as a comma list. compiled: torch.compile, tf.function with "
            "and without XLA, jax.jit; compile time is reported apart."
        ),
    ] = "eager",
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds one row may take (building, compiling and timing it) before its worker is "
            "stopped and the row is an error."
        ),
    ] = 300.0,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Let the worker's output (framework logs, the code's prints) through to stderr."
        ),
    ] = False,
    threads: Annotated[
        int, typer.Option(help="CPU threads, the same for every framework (the process is pinned to that many CPUs).")
    ] = 1,
    baseline: Annotated[
        str | None, typer.Option(help="Framework the speed column is relative to. Default: torch when timed.")
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help="default: every default shape, timed 0.2-2 s each. quick: each op's smallest and largest default "
            "shape (or the --shape given), timed 0.05-0.5 s each."
        ),
    ] = "default",
    min_time: Annotated[
        float | None, typer.Option(help="Seconds each case is timed at least. Default: 0.2 (quick: 0.05).")
    ] = None,
    max_time: Annotated[
        float | None,
        typer.Option(
            help="Seconds each case is timed at most; a case still noisy then is flagged. Default: 2 (quick: 0.5)."
        ),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=f"{', '.join(FORMATS)}. Default: table; github (annotations and a job summary) under GitHub "
            "Actions when the report goes to stdout.",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write the report to this file instead of stdout.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw time and GB/s against input size into FILE.png or FILE.svg.")
    ] = None,
    compare: Annotated[
        Path | None, typer.Option(help="A JSON of an earlier run (--format json): list the cases now slower.")
    ] = None,
    fail_if_slower: Annotated[
        str,
        typer.Option(
            help="With --compare: exit 1 when a case is slower by more than this (and beyond both runs' spread)."
        ),
    ] = "10%",
) -> None:
    """Time every framework's implementation of each op on the shapes real models use.

    Exit code 0 when everything ran, 1 on an error row or (with --compare) a case slower than
    the threshold, 2 on bad usage, 130 when interrupted (what was measured is still reported).
    """
    import math

    from normcheck.bench.plan import BenchRequest
    from normcheck.bench.timer import QUICK_SETTINGS, TimerSettings
    from normcheck.cli.output import check_output, default_format

    timing = QUICK_SETTINGS if profile == "quick" else TimerSettings()
    min_time = timing.min_time if min_time is None else min_time
    max_time = timing.max_time if max_time is None else max_time
    try:
        if format is not None and format not in FORMATS:
            raise UsageError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
            raise UsageError(f"--plot takes a .png or .svg file, not {plot.name!r}")
        for name, value in (("--min-time", min_time), ("--max-time", max_time), ("--timeout", timeout)):
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a positive finite number of seconds, got {value:g}")
        if not min_time <= max_time:
            raise UsageError(f"need --min-time <= --max-time, got {min_time:g} and {max_time:g}")
        output = check_output(output, plot=plot)
        format = format or default_format(output)
        plot = check_output(plot, option="--plot") if plot is not None else None
        old, threshold = _earlier_run(compare, fail_if_slower)
        from normcheck.bench.threads import check_threads

        check_threads(threads)  # here, before the worker that applies them starts
        request = BenchRequest(
            ops=op,
            frameworks=framework,
            impl=impl,
            backward=backward,
            style=style,
            device=device,
            dtypes=dtype,
            shapes=tuple(shape or ()),
            passes=pass_,
            modes=mode,
            threads=threads,
            baseline=baseline,
            profile=profile,
            variant=variant,
            quantize=quantize,
            scale=scale,
        )
        from normcheck.bench.plan import validate

        validate(request)
    except UsageError as e:
        fail_usage(str(e))
    job = _Job(request, TimerSettings(min_time=min_time, max_time=max_time), timeout, verbose, format, output, plot)
    _run(job, old, threshold)


def _earlier_run(compare: Path | None, fail_if_slower: str) -> tuple[BenchReport | None, float]:
    from normcheck.bench.compare import parse_threshold
    from normcheck.bench.load import load_report

    threshold = parse_threshold(fail_if_slower)
    return (load_report(compare) if compare is not None else None), threshold


@dataclass(frozen=True)
class _Job:
    """One bench run as the command line asked for it, checked."""

    request: BenchRequest
    settings: TimerSettings
    timeout: float
    verbose: bool
    fmt: str
    output: Path | None
    plot: Path | None


def _run(job: _Job, old: BenchReport | None, threshold: float) -> None:
    from normcheck.bench.compare import compare

    report = _measure(job)
    comparison = None
    if old is not None:
        comparison = compare(old.results, report.results, threshold, old.env, report.env)
    _write(job, report, comparison)
    _summarize(job, report, comparison)


def _measure(job: _Job) -> BenchReport:
    """The run, with a progress bar on a terminal's stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from normcheck.engine.stream import run_bench

    err = Console(stderr=True)
    with Progress(
        TextColumn("bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        disable=not stderr_is_tty(),
    ) as bar:
        task = bar.add_task("", total=None)

        def on_plan(notes: list[str], rows: int) -> None:
            for note in notes:
                bar.console.print(f"normcheck bench: {note}", highlight=False, soft_wrap=True)
            bar.update(task, total=rows)

        def progress(result: BenchResult) -> None:
            c = result.case
            bar.update(task, advance=1, description=f"{c.op} {c.framework} {c.impl} {c.pass_} {c.mode}")

        try:
            return run_bench(job.request, job.settings, job.timeout, job.verbose, on_plan, progress).report
        except UsageError as e:
            fail_usage(str(e))
        except KeyboardInterrupt:
            say("normcheck bench: interrupted before anything was measured; no report written")
            raise typer.Exit(130) from None


def _github_extras(job: _Job, report: BenchReport, comparison: Comparison | None, spec: str | None) -> None:
    """The job summary appended to $GITHUB_STEP_SUMMARY with --format github; under GitHub
    Actions with the report written to a file, the annotations on stdout and the job summary too."""
    from normcheck.cli.output import is_stdout
    from normcheck.report import render_bench
    from normcheck.report.github import append_step_summary, github_output

    annotate, job_summary = github_output(job.fmt, is_stdout(job.output))
    if annotate:
        emit(render_bench("github", report, comparison, spec), None)
    if job_summary:
        problem = append_step_summary(str(render_bench("markdown", report, comparison)))
        if problem:
            say(f"normcheck bench: {problem}")


def _write(job: _Job, report: BenchReport, comparison: Comparison | None) -> None:
    from normcheck.report import render_bench

    spec = job.request.impl if isinstance(job.request.impl, str) else None
    try:
        emit(render_bench(job.fmt, report, comparison, spec), job.output)
        _github_extras(job, report, comparison, spec)
        if job.plot is not None:
            from normcheck.report.bench_plot import plot as draw

            draw(report.results, job.plot)
    except UsageError as e:
        fail_usage(str(e))


def _summarize(job: _Job, report: BenchReport, comparison: Comparison | None) -> None:
    """The one-line summary on stderr, and the exit code."""
    output, plot = job.output, job.plot
    counts = report.counts()
    shown = output is not None and str(output) != "-"
    head = (
        "normcheck bench: interrupted; the report holds what was measured: "
        if report.interrupted
        else "normcheck bench: "
    )
    say(
        f"{head}{counts['ok']} measured ({counts['noisy']} noisy), {counts['skip']} skipped, "
        f"{counts['error']} errors, {counts['oom']} out of memory ({report.seconds:.1f}s)"
        + (f"; report in {output}" if shown else "")
        + (f"; plot in {plot}" if plot else "")
    )
    if comparison is not None and comparison.slower:
        say(
            f"normcheck bench: {len(comparison.slower)} case(s) slower than {comparison.threshold:.0%} beyond the "
            "measured spread"
        )
    if report.interrupted:
        raise typer.Exit(130)
    raise typer.Exit(1 if counts["error"] or (comparison is not None and comparison.slower) else 0)
