"""normcheck verify: check implementations against the reference, forward and backward."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from normcheck.cli._common import UsageError, emit, fail_usage, say, stderr_is_tty
from normcheck.names import ALL_OP_NAMES, DEFAULT_TIMEOUT, DTYPE_NAMES, KIND_NAMES, OP_NAMES, POLICY_NAMES

FORMATS = ("table", "csv", "json", "junit", "markdown", "github")


def verify(
    op: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Ops to check, comma list of {', '.join(ALL_OP_NAMES)} (repeatable; adaln: DiT's adaptive layer "
            "norm; ws: a convolution with Weight Standardization, ws_gn: followed by group norm). "
            f"Default: {', '.join(OP_NAMES)}."
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            help="An op variant: gemma (rms, add_rms: y = xhat * (1 + weight)), nobias (ln, add_ln: no bias), "
            "cumulative (bn: momentum=None, the running statistics the mean of the batches seen), "
            "paper (ws, ws_gn: the WS paper's code, (w - mean) / (unbiased std + eps))."
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help=f"A named precision policy of RMS norm, {', '.join(POLICY_NAMES)}: each case's forward must "
            "equal the policy's output computed exactly as it states, to the ulp (see normcheck conventions "
            "--policies). With --op rms (--variant gemma for gemma).",
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="Check a norm whose output is quantized to FP8: e4m3 (float8_e4m3fn, max 448) or e5m2 "
            "(float8_e5m2, max 57344); your function returns (q, scale). With --op rms or ln and --impl."
        ),
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option(
            help="With --quantize, the scale: row (dynamic, one per row of the normalized axes, vLLM's per-token; "
            "default), tensor (dynamic, one for the tensor) or static (a float32 scale given to your function)."
        ),
    ] = None,
    framework: Annotated[
        list[str] | None,
        typer.Option(
            help="Frameworks, comma list (repeatable). Default: every installed one. With --impl: the "
            "framework a function is written for (torch, jax or tensorflow)."
        ),
    ] = None,
    impl: Annotated[
        str | None,
        typer.Option(
            help="Your implementation: package.module:NAME or path/to/file.py:NAME (a function, a "
            "torch.nn.Module, keras Layer or flax Module class)."
        ),
    ] = None,
    backward: Annotated[str | None, typer.Option(help="With --style cs231n: the backward function, FILE:NAME.")] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="With --impl, a function called by its parameters' names: nchw or nhwc, where x's channels "
            "are (batch, instance, group norm). Default: nhwc for tensorflow, nchw for torch and jax."
        ),
    ] = None,
    param_shape: Annotated[
        str | None,
        typer.Option(
            help="With --impl, a function called by its parameters' names: flat, gamma and beta of shape (C,) "
            "(default), or broadcast, (1, C, 1, 1) in nchw, (1, 1, 1, C) in nhwc."
        ),
    ] = None,
    style: Annotated[str | None, typer.Option(help="cs231n: NumPy forward/backward functions.")] = None,
    shape: Annotated[
        list[str] | None, typer.Option(help="Input shape, e.g. 2,64,8,8 (repeatable). Default: each op's grid.")
    ] = None,
    groups: Annotated[str | None, typer.Option(help="Group norm G for --shape, comma list.")] = None,
    normalized_ndim: Annotated[
        str | None, typer.Option(help="Layer/RMS norm: how many trailing dims to normalize, for --shape.")
    ] = None,
    axes: Annotated[
        list[str] | None,
        typer.Option(
            help="Layer norm (--op ln) over these axes, e.g. 1 (the channels of NCHW: ConvNeXt's LayerNorm2d) "
            "or 1,2,3; negative ones count from the end (repeatable: one set each). Default shapes: 3-D to 5-D."
        ),
    ] = None,
    dtype: Annotated[
        list[str] | None,
        typer.Option(help=f"Dtypes, comma list of {', '.join(DTYPE_NAMES)} (repeatable). Default: all four."),
    ] = None,
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help=f"Input kinds, comma list of {', '.join(KIND_NAMES)} (repeatable; --profile stress also "
            "repeated). Default: all.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    eps: Annotated[
        float | None, typer.Option(help="eps for every framework (translated for each). Default: each one's own.")
    ] = None,
    momentum: Annotated[
        float | None,
        typer.Option(
            help="Batch-norm momentum as the weight of the new batch (PyTorch's meaning); each framework "
            "is given its equivalent. Default: each one's own."
        ),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(help="Also compare every framework directly with this one, under its eps and momentum."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every generated input. Default: 0.")] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="default: each op's whole grid of cases. quick: the fewest of those cases that expose "
            "every known mistake (a few seconds per framework; see the docs for how they are chosen). stress: "
            "large and strided cases for kernel authors (2^16 rows, hidden 4095..8191, sliced, transposed and "
            "expanded inputs, channels_last kept, in-place calls); the CPU subset on cpu, all with --device cuda."
        ),
    ] = None,
    world_size: Annotated[
        str | None,
        typer.Option(
            help="Comma list of rank counts (each at least 2): run batch norm (nn.SyncBatchNorm, or --impl) "
            "over torch.distributed in that many processes on this machine, gloo backend. Only with --op bn."
        ),
    ] = None,
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance (give --atol too).")] = None,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance (give --rtol too).")] = None,
    shard: Annotated[
        str | None, typer.Option(help="K/N: run slice K of N of the case matrix (for parallel CI jobs).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds one case may run before its worker is stopped and the case is an error. "
            f"Default: {DEFAULT_TIMEOUT:g}."
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Worker processes running cases at once. Default: the CPUs this process may use; 1 runs "
            "everything in one worker."
        ),
    ] = None,
    compile_cache: Annotated[
        bool,
        typer.Option(
            "--compile-cache",
            help="Keep JAX's compiled functions in normcheck's cache folder "
            "(~/.cache/normcheck/jax), so a second run skips compiling them.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Let the workers' output (framework logs, the code's prints) through to stderr."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Run the checks of this config file (pyproject.toml [tool.normcheck] or normcheck.toml). "
            "Default: the one in the current directory, when no check is given by flags."
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
    all_rows: Annotated[bool, typer.Option("--all", help="Table: list every check, not only failures.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail on known framework defects too.")] = False,
    repro: Annotated[
        Path | None,
        typer.Option(
            help="Write into this folder a standalone script and .npz reproducing each distinct failure "
            "(and known defect) with only the framework and NumPy, and an index, README.md."
        ),
    ] = None,
) -> None:
    """Check implementations against the float64 reference: outputs, gradients, running statistics.

    Exit code 0 when every check passes, 1 on any failure or error, 2 on bad usage.
    """
    from normcheck.cli.output import check_output, default_format
    from normcheck.verify.request import Request

    lists = {"op": _joined(op), "framework": _joined(framework), "dtype": _joined(dtype), "input": _joined(input)}
    selection = {
        "--op": lists["op"],
        "--framework": lists["framework"],
        "--impl": impl,
        "--backward": backward,
        "--style": style,
        "--layout": layout,
        "--param-shape": param_shape,
        "--shape": shape,
        "--groups": groups,
        "--normalized-ndim": normalized_ndim,
        "--axes": axes,
        "--dtype": lists["dtype"],
        "--input": lists["input"],
        "--eps": eps,
        "--momentum": momentum,
        "--against": against,
        "--rtol": rtol,
        "--atol": atol,
        "--world-size": world_size,
        "--variant": variant,
        "--policy": policy,
        "--quantize": quantize,
        "--scale": scale,
    }
    try:
        if format is not None and format not in FORMATS:
            raise UsageError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        output = check_output(output)
        format = format or default_format(output)
        _check_repro(repro)
        given = [flag for flag, value in selection.items() if value is not None and value != []]
        requests = _config_requests(config, given)
        if requests is None:
            requests = [
                Request(
                    ops=lists["op"],
                    frameworks=lists["framework"],
                    shapes=tuple(shape or ()),
                    groups=groups,
                    normalized_ndim=normalized_ndim,
                    axes=tuple(axes) if axes else None,
                    dtypes=lists["dtype"],
                    kinds=lists["input"],
                    device=device,
                    rtol=rtol,
                    atol=atol,
                    eps=eps,
                    momentum=momentum,
                    against=against,
                    impl=impl,
                    backward=backward,
                    style=style,
                    layout=layout,
                    param_shape=param_shape or "flat",
                    world_size=world_size,
                    variant=variant,
                    policy=policy,
                    quantize=quantize,
                    scale=scale,
                )
            ]
        requests = [_with_run_options(r, device, seed, shard, timeout, profile) for r in requests]
        for r in requests:
            _validate(r)
    except UsageError as e:
        fail_usage(str(e))
    command = _command_line() if repro is not None else ""
    _run(requests, format, output, all_rows, strict, jobs, verbose, compile_cache, (repro, command))


def _joined(values: list[str] | None) -> str | None:
    """A repeatable list option as one comma list (``--op gn --op ln`` is ``--op gn,ln``)."""
    return ",".join(values) if values else None


def _validate(request) -> None:
    from normcheck.verify.request import named, validate

    try:
        validate(request)
    except UsageError as e:
        raise named(request, e) from None


def _config_requests(config: Path | None, given: list[str]):
    """The config's checks: from --config, or from the current directory when no flag selects checks."""
    from normcheck.verify.config import find_config, load_config

    if config is None:
        if given:
            return None
        config = find_config(Path.cwd())
        if config is None:
            return None
    elif given:
        raise UsageError(f"{given[0]} cannot be combined with --config: the config file says what to check")
    return load_config(config)


def _with_run_options(
    request, device: str, seed: int | None, shard: str | None, timeout: float | None, profile: str | None
):
    """Flags that apply to every check, a config's included: given flags win, 0 included."""
    from dataclasses import replace

    changes: dict = {"shard": shard}
    if profile is not None:
        changes["profile"] = profile
    if timeout is not None:
        changes["timeout"] = timeout
    if device != "cpu":
        changes["device"] = device
    if seed is not None:
        changes["seed"] = seed
    return replace(request, **changes)


def _check_repro(directory: Path | None) -> None:
    """UsageError where --repro names a folder that cannot be written, before anything runs."""
    if directory is None:
        return
    from normcheck.repro.write import directory_problem

    problem = directory_problem(directory)
    if problem:
        raise UsageError(f"--repro {directory}: {problem}")


def _command_line() -> str:
    """The command as given (the options in the command's order), for the reproducers' index."""
    import shlex

    import click
    from click.core import ParameterSource

    ctx = click.get_current_context()
    words = ["normcheck", "verify"]
    for param in ctx.command.params:
        if param.name is None or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value, flag = ctx.params[param.name], param.opts[0]
        if isinstance(param, click.Option) and param.is_flag:
            words += [flag] if value else []
        else:
            words += [w for v in (value if param.multiple else [value]) for w in (flag, str(v))]
    return shlex.join(words)


def _write_reproducers(directory: Path, command: str, plans, reports) -> str:
    """Write the reproducers; the words the summary line ends with."""
    from normcheck.repro.write import write_reproducers

    try:
        # an interrupted run has reports for the plans it began
        runs = [(plan, report.results) for plan, report in zip(plans, reports, strict=False)]
        records = write_reproducers(runs, directory, command)
    except OSError as e:
        fail_usage(f"--repro {directory}: cannot write the reproducers: {e.strerror or e}")
    written = sum(r.script is not None for r in records)
    unwritten = len(records) - written
    more = f", {unwritten} failure(s) without one" if unwritten else ""
    return f"; {written} reproducer(s) in {directory}{more} (see {directory / 'README.md'})"


def _impl_specs(requests, reports) -> list[str | None]:
    """For each record of the merged report, the SPEC of the user implementation it checks (None
    for a built-in framework's row): where the github format points its annotations."""
    return [
        req.impl if isinstance(req.impl, str) and res.case.framework == "user" else None
        for req, rep in zip(requests, reports, strict=False)
        for res in rep.results
    ]


def _github_extras(fmt: str, output: Path | None, records, summary, specs) -> None:
    """The job summary appended to $GITHUB_STEP_SUMMARY with --format github; under GitHub
    Actions with the report written to a file, the annotations on stdout and the job summary too."""
    from normcheck.cli.output import is_stdout
    from normcheck.report.github import append_step_summary, github_output

    annotate, job_summary = github_output(fmt, is_stdout(output))
    if annotate:
        from normcheck.report import render

        emit(render("github", records, summary, specs=specs), None)
    if job_summary:
        from normcheck.report.verify_markdown import render_verify_markdown

        problem = append_step_summary(render_verify_markdown(records, summary))
        if problem:
            say(f"normcheck verify: {problem}")


def _run(requests, fmt, output, all_rows, strict, jobs, verbose, compile_cache, repro) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from normcheck.engine.jobs import check_shards, plan_request, run_plan
    from normcheck.engine.pool import Engine
    from normcheck.report import render
    from normcheck.verify.records import ERROR, FAIL, KNOWN
    from normcheck.verify.request import merge_reports

    err = Console(stderr=True)
    reports = []
    try:
        with Engine(jobs, verbose, compile_cache=compile_cache) as engine:
            plans = [plan_request(engine, r) for r in requests]
            check_shards(plans)
            with Progress(
                TextColumn("verify"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=not stderr_is_tty(),
            ) as bar:
                task = bar.add_task("verify", total=sum(p.total for p in plans))
                for p in plans:
                    reports.append(run_plan(engine, p, progress=lambda n: bar.advance(task, n), strict=strict))
                    if reports[-1].interrupted:
                        break
    except UsageError as e:
        fail_usage(str(e))
    except KeyboardInterrupt:  # while planning: nothing ran yet
        say("normcheck verify: interrupted before any case ran; no report written")
        raise typer.Exit(130) from None
    report = merge_reports(reports, strict)
    counts = report.counts
    summary = {**report.summary, "strict": strict}
    specs = _impl_specs(requests, reports)
    rendered = render(fmt, report.records, summary, show_all=all_rows, specs=specs)
    try:
        emit(rendered, output)
    except UsageError as e:
        fail_usage(str(e))
    _github_extras(fmt, output, report.records, summary, specs)
    failing = counts[FAIL] + counts[ERROR] + (counts[KNOWN] if strict else 0)
    where = f"; report in {output}" if output is not None and str(output) != "-" else ""
    repro_dir, command = repro
    if repro_dir is not None:
        where += _write_reproducers(repro_dir, command, plans, reports)
    head = (
        "normcheck verify: interrupted; the report holds the cases finished before it: "
        if report.interrupted
        else "normcheck verify: "
    )
    say(
        f"{head}{counts['pass']} passed, {counts[FAIL]} failed, {counts[ERROR]} errors, "
        f"{counts[KNOWN]} known defects, {counts['skip']} skipped ({summary['cases']} cases, "
        f"{summary['seconds']:.1f}s){where}"
    )
    if counts["skip"] and not (counts["pass"] or counts[KNOWN] or failing):
        say("normcheck verify: note: every check was skipped, so nothing was verified; the skip messages say why")
    if report.interrupted:
        raise typer.Exit(130)
    raise typer.Exit(1 if failing else 0)
