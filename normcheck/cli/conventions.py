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
    policies: Annotated[
        bool,
        typer.Option(
            "--policies",
            help="The named precision policies of RMS norm instead (llama, gemma, t5, native, fp32-weight: "
            "compute dtype, where the cast back happens, the weight's dtype, the offset's precision), as "
            "verify --policy holds an implementation to them.",
        ),
    ] = False,
) -> None:
    """Show each framework's defaults and semantics for each op, side by side, with the
    differences that bite when porting and the rule that translates each one."""
    from normcheck.porting import FRAMEWORK_ORDER, OTHER_CONVENTIONS, convention_rows
    from normcheck.report.conventions import render_conventions

    try:
        if format not in FORMATS:
            raise UsageError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        if policies:
            emit(_policies(format, op, framework, differences), output)
            return
        ops = choose(op, OP_NAMES, "op", OP_NAMES)
        fws = choose(framework, (*FRAMEWORK_ORDER, *OTHER_CONVENTIONS), "framework", FRAMEWORK_ORDER)
        rows = convention_rows(ops, fws)
        if differences:
            rows = [r for r in rows if r["differs"]]
        emit(render_conventions(format, rows), output)
    except UsageError as e:
        fail_usage(str(e))


def _policies(fmt: str, op: str | None, framework: str | None, differences: bool):
    """The policies' records rendered: every policy, or those covering ``--op`` (rms)."""
    from normcheck.policies import POLICIES
    from normcheck.report.policies import render_policies

    if framework is not None or differences:
        raise UsageError(
            "--policies lists the precision policies, which are no framework's: drop --framework and --differences"
        )
    ops = choose(op, OP_NAMES, "op", OP_NAMES)
    shown = [p for p in POLICIES.values() if any(o in p.ops for o in ops)]
    if not shown:
        raise UsageError(f"no precision policy covers {', '.join(ops)}; the policies cover rms")
    return render_policies(fmt, [p.as_dict() for p in shown])
