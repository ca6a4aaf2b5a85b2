"""Shared by the commands: parsing of list options and the one-line usage error."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer


class UsageError(Exception):
    """A mistake the user can fix: reported as one line, exit code 2."""


def fail_usage(message: str) -> NoReturn:
    typer.echo(f"normcheck: error: {message}", err=True)
    raise typer.Exit(2)


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def choose(value: str | None, valid: Iterable[str], what: str, default: Iterable[str]) -> tuple[str, ...]:
    """Parse a comma list, each item one of ``valid``."""
    valid = tuple(valid)
    items = split_list(value)
    for item in items:
        if item not in valid:
            raise UsageError(f"unknown {what} {item!r}; choose from {', '.join(valid)}")
    return tuple(dict.fromkeys(items)) if items else tuple(default)


def parse_shape(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"malformed shape {text!r}; write sizes separated by commas, e.g. 2,64,8,8") from None
    if not shape or any(n < 1 for n in shape):
        raise UsageError(f"malformed shape {text!r}; every size must be a positive integer")
    return shape


def parse_ints(value: str | None, what: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in split_list(value))
    except ValueError:
        raise UsageError(f"{what} must be a comma list of integers, got {value!r}") from None
    if any(i < 1 for i in items):
        raise UsageError(f"{what} must be positive, got {value!r}")
    return items


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
