"""normcheck's pytest plugin: the checks of a project's normcheck config as pytest items.

Installed with normcheck into every environment (the ``pytest11`` entry point ``normcheck``), so
this module stays light: it imports nothing but pytest's own names and the standard library, and
does nothing unless a run opts in, with ``--normcheck`` or ``pytest = true`` in the config of the
rootdir (normcheck.toml, else pyproject.toml's ``[tool.normcheck]``). Only then is
``normcheck.pytest_plugin.collect`` imported and registered; see docs/pytest.md.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

CONFIG_FILES = ("normcheck.toml", "pyproject.toml")  # the order of normcheck.verify.config.CONFIG_FILES
PLUGIN_NAME = "normcheck-session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("normcheck", "normcheck: the project config's checks as test items")
    group.addoption(
        "--normcheck",
        action="store_true",
        dest="normcheck",
        default=None,
        help="collect the checks of the rootdir's normcheck config (normcheck.toml or pyproject.toml) as tests",
    )
    group.addoption(
        "--no-normcheck",
        action="store_false",
        dest="normcheck",
        help="collect no normcheck checks, even where the config says pytest = true",
    )
    group.addoption(
        "--normcheck-strict",
        action="store_true",
        default=False,
        help="a check matching a known framework defect fails its item too (as normcheck verify --strict)",
    )
    group.addoption(
        "--normcheck-jobs",
        type=int,
        default=None,
        metavar="N",
        help="worker processes normcheck runs checks in, per pytest process (default: one per config check, "
        "at most the usable CPUs divided among xdist workers)",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config_in_use(config)
    if path is None:
        return
    from normcheck.pytest_plugin.collect import NormcheckPlugin

    config.pluginmanager.register(NormcheckPlugin(config, path), PLUGIN_NAME)


def config_in_use(config: pytest.Config) -> Path | None:
    """The config file whose checks this run collects, or None when the run has not opted in."""
    wanted = config.getoption("normcheck", None)
    if wanted is False:
        return None
    found = _rootdir_config(config.rootpath)
    if wanted:
        if found is None:
            names = " or ".join(CONFIG_FILES)
            raise pytest.UsageError(
                f"--normcheck: no normcheck config in the rootdir {config.rootpath} "
                f"({names} with a [tool.normcheck] table)"
            )
        return found[0]
    if found is None or found[1] is None or found[1] is False:
        return None  # the common case: nothing of normcheck's is imported
    from normcheck.errors import UsageError
    from normcheck.verify.config import pytest_opt_in

    try:  # true, or a value the loader refuses with its own message
        return found[0] if pytest_opt_in(found[0]) else None
    except UsageError as e:
        raise pytest.UsageError(f"normcheck: {e}") from None


def _rootdir_config(root: Path) -> tuple[Path, Any] | None:
    """(the config file ``normcheck verify`` would use in ``root``, its ``pytest`` value), or None.

    Read here with tomllib alone: a project without a normcheck config pays for one file check
    (and a read of pyproject.toml, parsed only when it mentions normcheck). A file that cannot
    be read or parsed counts as no opt-in here; with --normcheck the loader reports it.
    """
    for name in CONFIG_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
            if name == "pyproject.toml" and b"normcheck" not in data:
                return None
            doc = tomllib.loads(data.decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return (path, None) if name == "normcheck.toml" else None
        if name == "normcheck.toml":
            return path, doc.get("pytest")
        tool = doc.get("tool")
        table = tool.get("normcheck") if isinstance(tool, dict) else None
        if table is None:
            return None
        return path, table.get("pytest") if isinstance(table, dict) else None
    return None
