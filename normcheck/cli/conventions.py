"""normcheck conventions: each framework's defaults and semantics side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from normcheck.cli._common import UsageError, choose, emit, fail_usage
from normcheck.names import OP_NAMES

FORMATS = ("table", "csv", "json", "markdown")


def conventions(
    op: Annotated[
        str | None, typer.Option(help=f"Ops to show, comma list of {', '.join(OP_NAMES)}. Default: all.")
    ] = None,
    framework: Annotated[
        str | None,
        typer.Option(
            help="Frameworks to compare, comma list; cs231n names the CS231n assignment's NumPy "
            "functions. Default: the four frameworks (installed or not)."
        ),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="table, csv, json or markdown.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    differences: Annotated[
        bool, typer.Option("--differences", help="Only the properties on which the frameworks differ.")
    ] = False,
) -> None:
    """Show each framework's defaults and semantics for each op, side by side, with the
    differences that bite when porting and the rule that translates each one."""
    from normcheck.porting import FRAMEWORK_ORDER, OTHER_CONVENTIONS, convention_rows
    from normcheck.report.conventions import render_conventions

    try:
        if format not in FORMATS:
            raise UsageError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        ops = choose(op, OP_NAMES, "op", OP_NAMES)
        fws = choose(framework, (*FRAMEWORK_ORDER, *OTHER_CONVENTIONS), "framework", FRAMEWORK_ORDER)
        rows = convention_rows(ops, fws)
        if differences:
            rows = [r for r in rows if r["differs"]]
        emit(render_conventions(format, rows), output)
    except UsageError as e:
        fail_usage(str(e))
