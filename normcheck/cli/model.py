"""normcheck model: load a model in a worker process and list every normalization layer in it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from normcheck.cli._common import UsageError, emit, fail_usage, say

FORMATS = ("table", "json", "csv", "markdown")
NOT_YET = "normcheck model: per-layer checks come with --input/--input-shape (not available yet)"


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
    format: Annotated[str, typer.Option("--format", help=f"{', '.join(FORMATS)}.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the inventory to this file instead of stdout.")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds loading and inspecting the model may take before it is stopped. Default: 300."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Let the model's own output (its prints, framework logs) through to stderr."),
    ] = False,
) -> None:
    """List every normalization layer of a model, with its own configuration and weights.

    The model is loaded and inspected in a worker process: code that exits, crashes, hangs or
    prints cannot take normcheck with it. Exit code 0 with the inventory, 2 when the model cannot
    be loaded or is not a model (one line on stderr).
    """
    from normcheck.cli.output import check_output
    from normcheck.model.run import take_inventory
    from normcheck.model.source import resolve_source
    from normcheck.report.model_inventory import counts_text, render_inventory

    try:
        if format not in FORMATS:
            raise UsageError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        output = check_output(output)
        source = resolve_source(spec)
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
