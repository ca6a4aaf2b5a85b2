"""Writing a report or plot file the way a plain ``open(path, "w")`` would, but whole or not at all.

- A regular file, or a path that does not exist yet, is written to a temporary file in the same
  folder and renamed over it (readers never see half a report). The result has the mode a plain
  write gives: a new file 0o666 & ~umask, an existing one keeps its mode (and, where allowed,
  its owner).
- A symbolic link is followed: its target is replaced, the link itself stays a link.
- Anything else that exists (/dev/null, a FIFO, a terminal) is opened and written in place:
  renaming over it would destroy it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from normcheck.errors import UsageError

TEMP_ATTEMPTS = 100


def resolve_link(path: Path) -> Path:
    """The file ``path`` names: a symlink's final target (which may not exist yet), else itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_output(path: Path, save: Callable[[BinaryIO], object]) -> None:
    """Call ``save(file)`` to write ``path`` (see the module docstring for how); UsageError
    "cannot write PATH: reason" on any failure."""
    path = Path(path)
    target = resolve_link(path)
    try:
        existing = _stat(target)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise IsADirectoryError(21, "it is a directory")
        if existing is None or stat.S_ISREG(existing.st_mode):
            _replace(target, save, existing)
        else:
            _write_in_place(target, save)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def write_text_output(path: Path, text: str) -> None:
    """``text`` as UTF-8 into ``path``, as write_output does."""
    data = text.encode("utf-8")
    write_output(path, lambda f: f.write(data))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _write_in_place(target: Path, save: Callable[[BinaryIO], object]) -> None:
    with open(target, "wb") as f:
        save(f)


def _replace(target: Path, save: Callable[[BinaryIO], object], existing: os.stat_result | None) -> None:
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            save(f)
            f.flush()
            os.fsync(f.fileno())
        if existing is not None:
            _copy_mode_and_owner(tmp, existing)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new empty file next to ``target``. Created with mode 0o666, so the umask applies as it does
    to any new file (tempfile.mkstemp would make it 0600)."""
    stem = target.name[:100]  # room for the suffix within the 255-byte name limit
    for _ in range(TEMP_ATTEMPTS):
        tmp = target.with_name(f".{stem}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(17, "no free temporary file name next to it")


def _copy_mode_and_owner(tmp: Path, existing: os.stat_result) -> None:
    # permission bits only: a plain write by a non-root user clears setuid and setgid too
    os.chmod(tmp, stat.S_IMODE(existing.st_mode) & 0o777)
    if (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
        with contextlib.suppress(OSError):  # only root may give a file away; a plain write keeps the owner
            os.chown(tmp, existing.st_uid, existing.st_gid)
