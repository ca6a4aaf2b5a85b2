"""Where a command's report goes: --output checked before any case runs, then written whole.

``-`` as an output means stdout: check_output returns STDOUT (Path("-")) for it and emit prints
there. A file literally named ``-`` is still reachable as ``dir/-`` or by its absolute path
(``./-`` is the same Path as ``-``).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from normcheck.errors import UsageError
from normcheck.report.output_file import resolve_link, write_text_output

STDOUT = Path("-")


def is_stdout(output: Path | str | None) -> bool:
    return output is None or str(output) == "-"


def check_output(path: Path | None, *, plot: Path | None = None, option: str = "--output") -> Path | None:
    """``path`` made absolute against the current directory now (a later chdir cannot move it),
    STDOUT for "-", None for None, once it is sure the report can be written there.

    UsageError, one line naming ``option``, when ``path`` is a directory, its folder does not
    exist, the folder or the existing file is not writable, or it is the same file as ``plot``.
    """
    if path is None:
        return None
    if is_stdout(path):
        return STDOUT
    absolute = Path(path).absolute()
    _check_writable(absolute, option)
    if plot is not None and _same_file(absolute, Path(plot)):
        raise UsageError(f"{option} and --plot name the same file {path}; give each its own")
    return absolute


def default_format(output: Path | None) -> str:
    """The format when --format is not given: github under GitHub Actions when the report goes to
    stdout, else table."""
    from normcheck.report.github import default_format as github_default

    return github_default(is_stdout(output))


def _check_writable(path: Path, option: str) -> None:
    target = resolve_link(path)  # what is written: a symlink's target
    if target.is_dir():
        raise UsageError(f"{option} {path} is a directory; name a file")
    folder = target.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{option} {path}: folder {folder} {what}")
    exists = target.exists()
    if exists and not os.access(target, os.W_OK):
        raise UsageError(f"{option} {path}: {target} is not writable")
    # a new file, or a regular one replaced through a temporary file, needs the folder writable
    if (not exists or target.is_file()) and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: folder {folder} is not writable")


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def emit(report: object, output: Path | None) -> None:
    """Print a report (text or a rich renderable) on stdout when ``output`` is None or "-", else
    write it whole to ``output`` (see normcheck.report.output_file for how each kind of file is
    written); UsageError "cannot write PATH: reason" when that fails."""
    if output is None or is_stdout(output):
        _print(report)
    else:
        write_text_output(Path(output), report if isinstance(report, str) else _plain_text(report))


def _plain_text(renderable: object) -> str:
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        console = Console(width=200, no_color=True, record=True, file=sink)
        console.print(renderable)
        return console.export_text()


def _print(report: object) -> None:
    if isinstance(report, str):
        typer.echo(report, nl=False)
        return
    from rich.console import Console

    out = Console()
    if not out.is_terminal:  # logs and pipes: wide enough that no column is cut
        out = Console(width=160)
    out.print(report)
