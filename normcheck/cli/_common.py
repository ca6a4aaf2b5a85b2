"""Shared by the commands: parsing of list options, the one-line usage error, and the report's
output (check_output and emit, from normcheck.cli.output)."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from normcheck.cli.output import STDOUT, check_output, emit
from normcheck.errors import UsageError
from normcheck.parsing import choose, parse_ints, parse_shape, split_list

__all__ = [
    "STDOUT",
    "UsageError",
    "check_output",
    "choose",
    "emit",
    "fail_usage",
    "parse_ints",
    "parse_shape",
    "say",
    "split_list",
]


def fail_usage(message: str) -> NoReturn:
    typer.echo(f"normcheck: error: {message}", err=True)
    raise typer.Exit(2)


def say(line: str) -> None:
    """One line to stderr, never wrapped whatever the terminal's width (CI logs grep for it)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
