"""Shared by the commands: parsing of list options and the one-line usage error."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import typer

from normcheck.errors import UsageError
from normcheck.parsing import choose, parse_ints, parse_shape, split_list

__all__ = ["UsageError", "choose", "emit", "fail_usage", "parse_ints", "parse_shape", "split_list"]


def fail_usage(message: str) -> NoReturn:
    typer.echo(f"normcheck: error: {message}", err=True)
    raise typer.Exit(2)


def write_atomically(path: Path, text: str) -> None:
    """Write the whole report or nothing: a temporary file renamed into place."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def emit(report: object, output: Path | None) -> None:
    """Print a report (text or a rich renderable) or write it whole to ``output``."""
    from rich.console import Console

    if output is not None:
        if not isinstance(report, str):
            with open(os.devnull, "w") as sink:
                buf = Console(width=200, no_color=True, record=True, file=sink)
                buf.print(report)
                report = buf.export_text()
        write_atomically(output, report)
    elif isinstance(report, str):
        typer.echo(report, nl=False)
    else:
        out = Console()
        if not out.is_terminal:  # logs and pipes: wide enough that no column is cut
            out = Console(width=160)
        out.print(report)
