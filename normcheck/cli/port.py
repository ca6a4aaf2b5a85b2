"""normcheck port: a port compared with its source, norm layer by norm layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from normcheck.cli._common import UsageError, emit, fail_usage, say

if TYPE_CHECKING:
    from collections.abc import Callable

    from normcheck.model.port import PortComparison
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
    input_shape: Annotated[
        list[str] | None,
        typer.Option(
            "--input-shape",
            help="Also run each layer and its port on the same real activation: the source run once on seeded "
            "normal(0, 1) input of this shape, e.g. 1,3,224,224 (repeat it for a model with several inputs).",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="As --input-shape, on this input: a .npy, or a .npz with one array per source model input.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated input and of the upstream gradient.")] = 0,
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
    the frameworks. With --input-shape or --input, the source runs once on the input and each
    layer's real activation goes through the layer and through its port (in the port's layout),
    both judged against the float64 reference of the source's configuration. Exit code 0 when
    every pair is equivalent after translation, 1 on an error (a difference that changes the
    output, or an unpaired layer) or, with --strict, a warning; 2 when a model cannot be loaded or
    --map is bad.
    """
    from normcheck.cli.model import model_input
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
        shapes, file = model_input(input_shape or [], input_file)
        sources = resolve_source(src), resolve_source(dst)
        if shapes or file is not None:
            comparison = _on_activations(sources, shapes, file, seed, mapping, timeout, verbose)
        else:
            comparison = compare_inventories(*_inventories(sources, timeout, verbose), mapping)
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


A = TypeVar("A")
B = TypeVar("B")


def _side_by_side(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Both results, computed side by side: each call waits on its own worker process. Workers
    that run inline (``NORMCHECK_INLINE=1``) run in this process, one after the other: in two
    threads they would share its global state (torch's random generator among it)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    if os.environ.get("NORMCHECK_INLINE") == "1":
        return first(), second()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="normcheck-port") as pool:
        a, b = pool.submit(first), pool.submit(second)
        return a.result(), b.result()


def _inventories(
    sources: tuple[ModelSource, ModelSource], timeout: float | None, verbose: bool
) -> tuple[Inventory, Inventory]:
    """Both inventories, each from its own worker, loaded side by side; the source's UsageError
    first when both fail."""
    from normcheck.model.run import take_inventory

    return _side_by_side(
        lambda: take_inventory(sources[0], timeout, verbose), lambda: take_inventory(sources[1], timeout, verbose)
    )


def _on_activations(
    sources: tuple[ModelSource, ModelSource],
    shapes: tuple[tuple[int, ...], ...],
    file: str | None,
    seed: int,
    mapping: dict[str, str] | None,
    timeout: float | None,
    verbose: bool,
) -> PortComparison:
    """The configurations compared, then each pair run on the source layer's activation: the
    source captured (and the port inventoried) side by side, then the port's layers run."""
    import tempfile

    from normcheck.model.port import compare_inventories
    from normcheck.model.port_activation import PortTask, SourceTask, with_activations
    from normcheck.model.run import capture_source, run_port_layers, take_inventory

    with tempfile.TemporaryDirectory(prefix="normcheck-port-") as folder:
        task = SourceTask(sources[0], folder, shapes, file, seed)
        (src, captured), dst = _side_by_side(
            lambda: capture_source(task, timeout, verbose), lambda: take_inventory(sources[1], timeout, verbose)
        )
        comparison = compare_inventories(src, dst, mapping)
        port_task = PortTask(sources[1], folder, _runnable(comparison, captured), seed)
        findings = run_port_layers(port_task, timeout, verbose) if port_task.pairs else {}
        return with_activations(comparison, captured, findings)


def _runnable(comparison: PortComparison, captured: dict[int, str | None]) -> tuple[tuple[int, int, str], ...]:
    """(pair index, the source layer's index, the port layer's path) of each pair whose source layer ran."""
    index = {id(layer): k for k, layer in enumerate(comparison.src.layers)}
    out = []
    for k, pair in enumerate(comparison.pairs):
        if pair.src is None or pair.dst is None:
            continue
        i = index.get(id(pair.src))
        if i is not None and i in captured and captured[i] is None:
            out.append((k, i, pair.dst.path))
    return tuple(out)
