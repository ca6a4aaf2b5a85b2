"""normcheck model: load a model in a worker process, list every normalization layer in it, and
with --input-shape or --input check each layer on its real activation and on hostile inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from normcheck.cli._common import UsageError, emit, fail_usage, say

FORMATS = ("table", "json", "csv", "markdown")
CHECK_FORMATS = ("table", "csv", "json", "junit", "markdown")
NOT_YET = "normcheck model: per-layer checks run with --input-shape N,C,H,W or --input FILE.npz"


def model(
    spec: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A model file (.onnx, .pt TorchScript, .pt2 torch.export, .keras), or path/to/file.py:NAME or "
            "package.module:NAME naming a model, its class (built with no arguments) or a function building it "
            "(a Flax linen function returns (module, variables)).",
        ),
    ],
    list_layers: Annotated[
        bool, typer.Option("--list", help="List the normalization layers (their settings and parameters) and stop.")
    ] = False,
    input_shape: Annotated[
        list[str] | None,
        typer.Option(
            "--input-shape",
            help="Check every layer on the model run once on seeded normal(0, 1) input of this shape, e.g. "
            "1,3,224,224 (repeat it, one per input, for a model with several inputs).",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Check every layer on the model run once on this input: a .npy, or a .npz with one "
            "array per model input (in the model's order; ONNX inputs also by name).",
        ),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            "--kinds",
            "--input-kind",
            help="Inputs each layer is checked on, comma list of captured (its real activation), large_mean, "
            "tiny_scale, constant, half_range, normal. Default: all but normal.",
        ),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Cast a PyTorch model (and its generated input) to this dtype first.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated input, dy and the hostile inputs.")] = 0,
    runtime: Annotated[
        str,
        typer.Option(
            help="ONNX models: onnxruntime (its CPU provider, which runs float16 nodes lacking a float16 kernel "
            "in float32) or onnx-reference (ONNX's reference evaluator: every op in its own dtype, the graph "
            "as written)."
        ),
    ] = "onnxruntime",
    strict: Annotated[bool, typer.Option(help="Fail on known framework defects too.")] = False,
    format: Annotated[
        str, typer.Option("--format", help=f"{', '.join(CHECK_FORMATS)} (junit only with checks).")
    ] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the report to this file instead of stdout.")] = None,
    all_rows: Annotated[bool, typer.Option("--all", help="Table: list every check, not only failures.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds loading (and running) the model may take, and each layer's checks, before it is "
            "stopped. Default: 300."
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Let the model's own output (its prints, framework logs) through to stderr."),
    ] = False,
) -> None:
    """List every normalization layer of a model, with its own configuration and weights; with
    --input-shape or --input, check each one against the float64 reference.

    The model is loaded and run in a worker process: code that exits, crashes, hangs or prints
    cannot take normcheck with it. Exit code 0 with the inventory (or when every check passes),
    1 on any failed check or error, 2 when the model cannot be loaded, is not a model, or cannot
    be run on the input (one line on stderr).
    """
    from normcheck.cli.output import check_output
    from normcheck.model.run import take_inventory
    from normcheck.model.source import resolve_source
    from normcheck.report.model_inventory import counts_text, render_inventory

    checking = not list_layers and (bool(input_shape) or input_file is not None)
    try:
        valid = CHECK_FORMATS if checking else FORMATS
        if format not in valid:
            raise UsageError(f"unknown format {format!r}; choose from {', '.join(valid)}")
        output = check_output(output)
        source = resolve_source(spec)
        if checking:
            _check(
                source,
                input_shape or [],
                input_file,
                kinds,
                dtype,
                seed,
                format,
                output,
                all_rows,
                timeout,
                verbose,
                runtime,
                strict,
            )
        inventory = take_inventory(source, timeout, verbose)
        emit(render_inventory(format, inventory.records(), inventory.summary()), output)
    except UsageError as e:
        fail_usage(" ".join(str(e).split()))
    where = f"; inventory in {output}" if output is not None and str(output) != "-" else ""
    how = f"{inventory.loader} {inventory.model}, {inventory.seconds:.1f}s"
    say(f"normcheck model: {counts_text(inventory.summary())} in {spec} ({how}){where}")
    if not list_layers:
        say(NOT_YET)
    raise typer.Exit(0)


def _check(
    source, shapes, input_file, kinds, dtype, seed, fmt, output, all_rows, timeout, verbose, runtime, strict
) -> None:
    """Run the per-layer checks, write the report, and exit 0, 1 or (UsageError) 2."""
    import time

    from normcheck.model.check_task import CheckTask
    from normcheck.model.checks import DEFAULT_KINDS, MODEL_KINDS
    from normcheck.model.run import check_model
    from normcheck.names import DTYPE_NAMES
    from normcheck.parsing import choose
    from normcheck.report.model_checks import render_model_checks
    from normcheck.report.model_inventory import counts_text
    from normcheck.verify.records import ERROR, FAIL, KNOWN, summarize

    parsed, file = model_input(shapes, input_file)
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPE_NAMES)}")
    chosen = choose(kinds, MODEL_KINDS, "input kind", DEFAULT_KINDS)
    if runtime not in ("onnxruntime", "onnx-reference"):
        raise UsageError(f"unknown runtime {runtime!r}; choose from onnxruntime, onnx-reference")
    task = CheckTask(
        source,
        parsed,
        file,
        tuple(chosen),
        seed,
        dtype,
        runtime,
    )
    start = time.perf_counter()
    inventory, results = check_model(task, timeout, verbose)
    seconds = time.perf_counter() - start
    counts = summarize(results)
    summary = {
        **counts,
        "cases": len({(r.case.impl, r.case.kind) for r in results}),
        "seconds": round(seconds, 2),
        "strict": strict,
    }
    records = [r.as_dict() for r in results]
    emit(render_model_checks(fmt, records, summary, inventory.records(), inventory.summary(), all_rows), output)
    failing = counts[FAIL] + counts[ERROR] + (counts[KNOWN] if strict else 0)
    where = f"; report in {output}" if output is not None and str(output) != "-" else ""
    probed = len({r.case.impl for r in results if "; probed: " in r.case.impl})
    found = counts_text(inventory.summary()) + (f", {probed} of them confirmed by probing" if probed else "")
    say(
        f"normcheck model: {found} in {source.text}: {counts['pass']} passed, "
        f"{counts[FAIL]} failed, {counts[ERROR]} errors, {counts[KNOWN]} known, {counts['skip']} skipped "
        f"({seconds:.1f}s){where}"
    )
    raise typer.Exit(1 if failing else 0)


def model_input(shapes: list[str], input_file: Path | None) -> tuple[tuple[tuple[int, ...], ...], str | None]:
    """--input-shape (parsed) and --input (resolved), checked: UsageError for both, a bad shape or file."""
    from normcheck.parsing import parse_shape

    if shapes and input_file is not None:
        raise UsageError("give --input-shape or --input, not both")
    parsed = tuple(parse_shape(s, allow_empty=False) for s in shapes)
    if input_file is not None:
        if input_file.suffix.lower() not in (".npy", ".npz"):
            raise UsageError(f"--input {input_file}: give a .npy or .npz file")
        if not input_file.is_file():
            raise UsageError(f"--input {input_file}: no such file")
    return parsed, str(input_file.resolve()) if input_file is not None else None
