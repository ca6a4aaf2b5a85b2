"""The command line: one module per command. Only this package prints and exits."""

from __future__ import annotations

import os
import sys

import typer

from normcheck.cli import bench, conventions, verify

app = typer.Typer(
    name="normcheck",
    help="Verify and profile normalization layers against float64 reference formulas.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain click help: rich's help formatter costs more import time than the rest of the CLI
    rich_markup_mode=None,
)
app.command(name="verify")(verify.verify)
app.command(name="bench")(bench.bench)
app.command(name="conventions")(conventions.conventions)


@app.callback()
def _root() -> None:
    """Verify and profile normalization layers against float64 reference formulas."""


def main() -> None:
    """Entry point: usage errors exit 2, failures 1; normcheck never shows its own traceback."""
    try:
        app()
    except KeyboardInterrupt:
        print("normcheck: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug in normcheck itself: one line, unless asked for more
        if os.environ.get("NORMCHECK_DEBUG"):
            raise
        message = f"normcheck: internal error: {type(e).__name__}: {e} (set NORMCHECK_DEBUG=1 for details)"
        print(message, file=sys.stderr)
        sys.exit(1)
