"""The command line: one module per command. Only this package prints and exits."""

from __future__ import annotations

import os
import sys

import click
import typer
import typer.main

from normcheck.cli import bench, conventions, model, port, verify

# click 8.2+ raises this for a bare ``normcheck``; older versions print the help and exit 0
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", None)

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
app.command(name="model")(model.model)
app.command(name="port")(port.port)


@app.callback()
def _root() -> None:
    """Verify and profile normalization layers against float64 reference formulas."""


def main() -> None:
    """Entry point: usage errors exit 2, failures 1; normcheck never shows its own traceback."""
    try:
        code = _run(sys.argv[1:])
    except click.exceptions.UsageError as e:
        code = _usage_error(e)
    except click.exceptions.ClickException as e:
        print(f"normcheck: error: {e.format_message()}", file=sys.stderr)
        code = e.exit_code
    except click.exceptions.Exit as e:  # typer.Exit, and --help
        code = e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("normcheck: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `normcheck ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        code = 1
    except Exception as e:  # a bug in normcheck itself: one line, unless asked for more
        if os.environ.get("NORMCHECK_DEBUG"):
            raise
        message = f"normcheck: internal error: {type(e).__name__}: {e} (set NORMCHECK_DEBUG=1 for details)"
        print(message, file=sys.stderr)
        code = 1
    sys.exit(code)


def _run(args: list[str]) -> int:
    """Parse and run one command, raising what click and the command raise.

    Not ``app()``: click's standalone mode prints a usage error on four lines ("Usage: ...",
    "Try ...", "", "Error: ...") and typer turns a Ctrl-C into a silent exit 130; main() says
    each in one line instead.
    """
    command = typer.main.get_command(app)
    with command.make_context("normcheck", args) as ctx:
        command.invoke(ctx)
    return 0


def _usage_error(e: click.exceptions.UsageError) -> int:
    """A bare ``normcheck`` asks for the help: on stdout, exit 0. Any other: one line, exit 2."""
    if NO_ARGS_IS_HELP is not None and isinstance(e, NO_ARGS_IS_HELP):
        print(e.format_message())
        return 0
    print(f"normcheck: error: {e.format_message()}", file=sys.stderr)
    return 2
