"""normcheck verify: check implementations against the reference, forward and backward."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from normcheck.cli._common import (
    UsageError,
    choose,
    emit,
    fail_usage,
    parse_ints,
    parse_shape,
    split_list,
    stderr_is_tty,
)
from normcheck.names import DEFAULT_DTYPES, DTYPE_NAMES, KIND_NAMES, OP_NAMES

FORMATS = ("table", "csv", "json")


def verify(
    op: Annotated[
        str | None, typer.Option(help=f"Ops to check, comma list of {', '.join(OP_NAMES)}. Default: all.")
    ] = None,
    framework: Annotated[
        str | None, typer.Option(help="Frameworks, comma list. Default: every installed one.")
    ] = None,
    shape: Annotated[
        list[str] | None, typer.Option(help="Input shape, e.g. 2,64,8,8 (repeatable). Default: each op's grid.")
    ] = None,
    groups: Annotated[str | None, typer.Option(help="Group norm G for --shape, comma list.")] = None,
    normalized_ndim: Annotated[
        str | None, typer.Option(help="Layer/RMS norm: how many trailing dims to normalize, for --shape.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help=f"Dtypes, comma list of {', '.join(DTYPE_NAMES)}. Default: all four.")
    ] = None,
    input: Annotated[
        str | None, typer.Option("--input", help=f"Input kinds, comma list of {', '.join(KIND_NAMES)}. Default: all.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    eps: Annotated[
        float | None, typer.Option(help="eps for every framework (translated for each). Default: each one's own.")
    ] = None,
    momentum: Annotated[
        float | None,
        typer.Option(help="Batch-norm momentum as the weight of the new batch (PyTorch's meaning); each framework "
                     "is given its equivalent. Default: each one's own."),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(help="Also compare every framework directly with this one, under its eps and momentum."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every generated input.")] = 0,
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance (give --atol too).")] = None,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance (give --rtol too).")] = None,
    format: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the report to this file instead of stdout.")] = None,
    all_rows: Annotated[bool, typer.Option("--all", help="Table: list every check, not only failures.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail on known framework defects too.")] = False,
) -> None:
    """Check implementations against the float64 reference: outputs, gradients, running statistics.

    Exit code 0 when every check passes, 1 on any failure or error, 2 on bad usage.
    """
    try:
        opts, frameworks = _resolve(op, framework, shape, groups, normalized_ndim, dtype, input, device, seed,
                                    rtol, atol, format, eps, momentum, against)
    except UsageError as e:
        fail_usage(str(e))
    _run(opts, frameworks, format, output, all_rows, strict)


def _resolve(op, framework, shape, groups, normalized_ndim, dtype, kinds, device, seed, rtol, atol, fmt, eps, momentum,
             against):
    from normcheck import frameworks as fw_registry
    from normcheck.verify import Options, invalid_cases

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if (rtol is None) != (atol is None):
        raise UsageError("give --rtol and --atol together, or neither")
    if rtol is not None and (rtol < 0 or atol < 0):
        raise UsageError("--rtol and --atol must not be negative")
    if eps is not None and not eps > 0:
        raise UsageError(f"--eps must be positive, got {eps:g}")
    if momentum is not None and not 0 <= momentum <= 1:
        raise UsageError(f"--momentum must lie in [0, 1] (the weight of the new batch), got {momentum:g}")
    ops = choose(op, OP_NAMES, "op", OP_NAMES)
    installed = fw_registry.installed()
    names = choose(framework, fw_registry.FRAMEWORKS, "framework", installed)
    baseline = choose(against, fw_registry.FRAMEWORKS, "framework", ())
    if len(baseline) > 1:
        raise UsageError("--against takes one framework")
    for name in (*names, *baseline):
        if not fw_registry.is_installed(name):
            extra = fw_registry.FRAMEWORKS[name].extra
            raise UsageError(f"framework {name!r} is not installed; pip install 'normcheck[{extra}]'")
    if not names:
        raise UsageError("no framework is installed; pip install 'normcheck[torch]' (or tensorflow, jax, onnxruntime)")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; choose from cpu, cuda")
    opts = Options(
        ops=ops,
        dtypes=choose(dtype, DTYPE_NAMES, "dtype", DEFAULT_DTYPES),
        shapes=tuple(parse_shape(s) for s in shape or ()),
        groups=parse_ints(groups, "--groups"),
        normalized_ndim=parse_ints(normalized_ndim, "--normalized-ndim"),
        kinds=choose(kinds, KIND_NAMES, "input kind", KIND_NAMES),
        device=device,
        seed=seed,
        tolerance=None if rtol is None else (rtol, atol),
        explicit_dtypes=bool(split_list(dtype)),
        eps=eps,
        momentum=momentum,
    )
    problems = invalid_cases(opts)
    if problems:
        raise UsageError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    loaded = {}
    for name in dict.fromkeys((*names, *baseline)):
        fw = fw_registry.load(name)
        reason = fw.device_problem(device)
        if reason:
            raise UsageError(f"--device {device}: {reason}")
        loaded[name] = fw
    if baseline:
        opts = replace(opts, against=loaded[baseline[0]])
    return opts, [loaded[n] for n in names]


def _run(opts, frameworks, fmt, output, all_rows, strict) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from normcheck.records import ERROR, FAIL, KNOWN
    from normcheck.report import render
    from normcheck.verify import count_cases, plan, run, summarize, translations

    err = Console(stderr=True)
    start = time.perf_counter()
    units = plan(opts, frameworks)
    total = count_cases(units)
    with Progress(
        TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=not stderr_is_tty(),
    ) as bar:
        task = bar.add_task("verify", total=total)
        results = list(run(units, opts, progress=lambda n: bar.advance(task, n)))
    elapsed = time.perf_counter() - start
    counts = summarize(results)
    summary = {**counts, "cases": total, "seconds": round(elapsed, 2), "translations": translations(units, opts)}
    if opts.against is not None:
        summary["against"] = opts.against.name
    records = [r.as_dict() for r in results]
    report = render(fmt, records, summary, show_all=all_rows)
    try:
        emit(report, output)
    except UsageError as e:
        fail_usage(str(e))
    failing = counts[FAIL] + counts[ERROR] + (counts[KNOWN] if strict else 0)
    err.print(
        f"normcheck verify: {counts['pass']} passed, {counts[FAIL]} failed, {counts[ERROR]} errors, "
        f"{counts[KNOWN]} known defects, {counts['skip']} skipped "
        f"({total} cases, {elapsed:.1f}s)" + (f"; report in {output}" if output else ""),
        highlight=False,
    )
    raise typer.Exit(1 if failing else 0)
