"""normcheck port: a port compared with its source, norm layer by norm layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from normcheck.cli._common import UsageError, emit, fail_usage, say

if TYPE_CHECKING:
    from normcheck.model.records import Inventory
    from normcheck.model.source import ModelSource

FORMATS = ("table", "json", "csv", "markdown")
MODEL_HELP = (
    "A model file (.onnx, .pt TorchScript, .pt2 torch.export, .keras), or path/to/file.py:NAME or "
    "package.module:NAME naming a model, its class or a function building it (as for normcheck model)."
)


def port(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The source model. " + MODEL_HELP)],
    dst: Annotated[str, typer.Argument(metavar="DST", help="Its port, in the same or another framework.")],
    map_file: Annotated[
        Path | None,
        typer.Option(
            "--map",
            metavar="FILE",
            help="Pairs the names and the order do not find: a TOML or JSON table, source layer path = port layer "
            'path ("layer1.0.bn1" = "block1/bn").',
        ),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings (momentum, dtype, mode) too.")] = False,
    format: Annotated[str, typer.Option("--format", help=f"{', '.join(FORMATS)}.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the report to this file instead of stdout.")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds loading and inspecting each model may take before it is stopped. Default: 300."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Let the models' own output (their prints, framework logs) through to stderr."),
    ] = False,
) -> None:
    """Compare a port with its source, norm layer by norm layer, after translating conventions.

    Each model is loaded and inventoried in its own worker process (as normcheck model does). The
    norm layers are paired by --map, then by name (separators normalized: layer1.0.bn1 =
    layer1_0_bn1 = layer1/0/bn1), then by order; each pair's eps, momentum, layout, groups, op,
    affine, running statistics, dtype and weights are compared with the translation rules between
    the frameworks. Exit code 0 when every pair is equivalent after translation, 1 on an error (a
    difference that changes the output, or an unpaired layer) or, with --strict, a warning; 2 when
    a model cannot be loaded or --map is bad.
    """
    from normcheck.cli.output import check_output
    from normcheck.model.pairing import load_map
    from normcheck.model.port import compare_inventories
    from normcheck.model.source import resolve_source
    from normcheck.report.port import counts_text, first_divergence_text, render_port

    try:
        if format not in FORMATS:
            raise UsageError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        output = check_output(output)
        mapping = load_map(map_file) if map_file is not None else None
        sources = resolve_source(src), resolve_source(dst)
        inventories = _inventories(sources, timeout, verbose)
        comparison = compare_inventories(*inventories, mapping)
        summary = comparison.summary()
        emit(render_port(format, comparison.records(), summary), output)
    except UsageError as e:
        fail_usage(" ".join(str(e).split()))
    failed = comparison.failed(strict)
    where = f"; report in {output}" if output is not None and str(output) != "-" else ""
    say(f"normcheck port: {counts_text(summary)} ({src} vs {dst}){where}")
    if summary["first_divergence"] is not None:
        say(f"normcheck port: {first_divergence_text(summary)}")
    raise typer.Exit(1 if failed else 0)


def _inventories(
    sources: tuple[ModelSource, ModelSource], timeout: float | None, verbose: bool
) -> tuple[Inventory, Inventory]:
    """Both inventories, each from its own worker, loaded side by side (one after the other when
    the workers run inline); the source's UsageError first when both fail."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from normcheck.model.run import take_inventory

    if os.environ.get("NORMCHECK_INLINE") == "1":
        return take_inventory(sources[0], timeout, verbose), take_inventory(sources[1], timeout, verbose)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="normcheck-port") as pool:
        futures = [pool.submit(take_inventory, source, timeout, verbose) for source in sources]
        return futures[0].result(), futures[1].result()
