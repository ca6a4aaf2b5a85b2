"""Project config: the checks ``normcheck verify`` runs with no arguments.

In pyproject.toml under ``[tool.normcheck]``, or at the top level of normcheck.toml::

    [tool.normcheck]
    dtypes = ["float32", "float16"]          # defaults for every check below

    [[tool.normcheck.check]]
    name = "our group norm"
    op = "gn"
    impl = "mypkg/layers.py:MyGroupNorm"
    shapes = [[2, 64, 8, 8], [4, 32, 16, 16]]
    rtol = 1e-5
    atol = 1e-6

Unknown keys and values of the wrong type are UsageErrors naming the file, the key and why.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from normcheck.errors import UsageError
from normcheck.parsing import parse_shape, split_list
from normcheck.verify.request import NUMBER_RANGES, Request, tolerance_pair_problem

CONFIG_FILES = ("normcheck.toml", "pyproject.toml")
STR, NUM, INT = "a string", "a number", "an integer"
STR_LIST, INT_LIST = "a string or a list of strings", "an integer or a list of integers"
# key -> (Request field, expected type)
KEYS: dict[str, tuple[str, str]] = {
    "name": ("name", STR),
    "op": ("ops", STR_LIST),
    "ops": ("ops", STR_LIST),
    "impl": ("impl", STR),
    "backward": ("backward", STR),
    "style": ("style", STR),
    "framework": ("frameworks", STR_LIST),
    "frameworks": ("frameworks", STR_LIST),
    "shapes": ("shapes", "a list of shapes, each a list of non-negative integers"),
    "groups": ("groups", INT_LIST),
    "normalized_ndim": ("normalized_ndim", INT_LIST),
    "axes": ("axes", INT_LIST),
    "dtype": ("dtypes", STR_LIST),
    "dtypes": ("dtypes", STR_LIST),
    "input": ("kinds", STR_LIST),
    "inputs": ("kinds", STR_LIST),
    "device": ("device", STR),
    "seed": ("seed", INT),
    "rtol": ("rtol", NUM),
    "atol": ("atol", NUM),
    "eps": ("eps", NUM),
    "momentum": ("momentum", NUM),
    "against": ("against", STR),
    "timeout": ("timeout", NUM),
    "profile": ("profile", STR),
    "variant": ("variant", STR),
    "policy": ("policy", STR),
    "layout": ("layout", STR),
    "param_shape": ("param_shape", STR),
    "world_size": ("world_size", INT_LIST),
    "quantize": ("quantize", STR),
    "scale": ("scale", STR),
}
assert {f for f, _ in KEYS.values()} <= {f.name for f in fields(Request)}
# a top-level key that is no check's field: ``pytest = true`` turns on normcheck's pytest plugin
# (normcheck/pytest_plugin) for the file; ``normcheck verify`` ignores it
PYTEST_KEY = "pytest"
# a check must name what it verifies: an empty [[check]] table would otherwise run every op on
# every framework, the default matrix, which is never what a config entry means
SELECTING_KEYS = ("op", "impl")
SELECTING = {KEYS[k][0] for k in SELECTING_KEYS}
# number keys -> (what the value must satisfy, in words; the test); 0 is a value like any other.
# The single numbers have the ranges flags and API keywords have (request.NUMBER_RANGES).
RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{key: NUMBER_RANGES[field] for key, (field, kind) in KEYS.items() if kind == NUM},
    "groups": ("positive", lambda v: all(n > 0 for n in _as_list(v))),
    "normalized_ndim": ("positive", lambda v: all(n > 0 for n in _as_list(v))),
    "axes": ("integers, negative ones counting from the end", lambda v: True),
    "world_size": ("at least 2", lambda v: all(n >= 2 for n in _as_list(v))),
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _selects(value: Any) -> bool:
    """Whether an op or impl value names anything: "" and [] select nothing, like absence."""
    return any(split_list(v) for v in _as_list(value))


def find_config(directory: Path) -> Path | None:
    """normcheck.toml, else a pyproject.toml with a [tool.normcheck] table, in ``directory``."""
    for name in CONFIG_FILES:
        path = directory / name
        if path.is_file() and (name != "pyproject.toml" or "normcheck" in _read(path).get("tool", {})):
            return path
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:  # tomllib decodes the whole file before parsing it
        raise UsageError(
            f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); TOML files must be UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None


def load_config(path: Path) -> list[Request]:
    """The checks ``path`` lists, each a Request, with the file's defaults applied."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    doc = _read(path)
    if path.name == "pyproject.toml":
        if "normcheck" not in doc.get("tool", {}):
            raise UsageError(f"{path} has no [tool.normcheck] table")
        table, where = doc["tool"]["normcheck"], "[tool.normcheck]"
    else:
        table, where = doc, ""
    if not isinstance(table, dict):
        raise UsageError(f"{path}: {where or 'the file'} must be a table")
    checks = table.get("check", [])
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise UsageError(f"{path}: {_key(where, 'check')} must be an array of tables ([[...check]])")
    _pytest_value(path, where, table)
    defaults = _fields(path, where, {k: v for k, v in table.items() if k not in ("check", PYTEST_KEY)})
    if not checks:
        raise UsageError(f"{path}: {where or 'the file'} lists no checks; add a [[{_key(where, 'check')[1:-1]}]]")
    requests = []
    for i, check in enumerate(checks, 1):
        at = f"{_key(where, 'check')}[{i}]"
        if PYTEST_KEY in check:
            raise UsageError(
                f"{path}: {at}.{PYTEST_KEY}: a top-level key (it turns on the pytest plugin for the whole file), "
                "not a key of one check"
            )
        given = _fields(path, at, check)
        merged = {**defaults, **given}
        _check_tolerance_pair(path, at, where, given, merged)
        if not any(_selects(merged.get(field)) for field in SELECTING):
            raise UsageError(f"{path}: check {i} selects nothing; give at least {' or '.join(SELECTING_KEYS)}")
        merged.setdefault("name", f"check {i}")
        requests.append(Request(**merged))
    return requests


def pytest_opt_in(path: Path) -> bool:
    """Whether the config file ``path`` turns on normcheck's pytest plugin (``pytest = true`` at
    its top level, in pyproject.toml under [tool.normcheck]); UsageError for a non-boolean."""
    path = Path(path)
    doc = _read(path)
    if path.name == "pyproject.toml":
        table, where = doc.get("tool", {}).get("normcheck", {}), "[tool.normcheck]"
    else:
        table, where = doc, ""
    return isinstance(table, dict) and _pytest_value(path, where, table)


def _pytest_value(path: Path, where: str, table: dict[str, Any]) -> bool:
    value = table.get(PYTEST_KEY, False)
    if not isinstance(value, bool):
        at = f"{where}.{PYTEST_KEY}" if where else PYTEST_KEY
        raise UsageError(f"{path}: {at}: expected true or false (turns on the pytest plugin), got {_show(value)}")
    return value


def _check_tolerance_pair(path: Path, at: str, top: str, given: dict[str, Any], merged: dict[str, Any]) -> None:
    """rtol and atol go together in each check (``at``), given in it or above it (``top``)."""
    problem = tolerance_pair_problem("rtol" in merged, "atol" in merged)
    if problem:
        inherited = (
            "" if given.keys() & {"rtol", "atol"} else f" ({problem.split()[0]} is set in {top or 'the top level'})"
        )
        raise UsageError(f"{path}: {at}: {problem}{inherited}")


def _key(where: str, key: str) -> str:
    return f"[{where[1:-1]}.{key}]" if where else f"[{key}]"


def _fields(path: Path, where: str, table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # field -> the key that set it (op and ops both set ops)
    for key, value in table.items():
        at = f"{path}: {where + '.' if where else ''}{key}"
        if key not in KEYS:
            raise UsageError(f"{at}: unknown key; valid keys are {', '.join(sorted(set(KEYS)))}")
        field, expected = KEYS[key]
        if field in given:
            raise UsageError(f"{at}: {given[field]} is given too; they are the same key, give one")
        given[field] = key
        if not _fits(value, expected):
            raise UsageError(f"{at}: expected {expected}, got {_show(value)}")
        if expected == NUM and not math.isfinite(value):  # TOML has nan and inf
            raise UsageError(f"{at}: must be a finite number, got {value!r}")
        if key in RANGES and not RANGES[key][1](value):
            raise UsageError(f"{at}: must be {RANGES[key][0]}, got {value!r}")
        if key == "shapes":
            _check_shapes(at, value)
        out[field] = value
    return out


def _check_shapes(at: str, shapes: list[Any]) -> None:
    """Shapes written as strings ("2,64,8,8") are parsed here, so a bad one names the file."""
    for shape in shapes:
        if isinstance(shape, str):
            try:
                parse_shape(shape)
            except UsageError as e:
                raise UsageError(f"{at}: {e}") from None


def _fits(value: Any, expected: str) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if expected == STR:
        return isinstance(value, str)
    if expected == NUM:
        return (isinstance(value, (int, float))) and not isinstance(value, bool)
    if expected == INT:
        return is_int(value)
    if expected == STR_LIST:
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if expected == INT_LIST:
        return is_int(value) or (isinstance(value, list) and all(is_int(v) for v in value))
    # shapes: a list of lists of non-negative integers (0: an empty tensor), or of "2,64,8,8" strings
    return isinstance(value, list) and all(
        isinstance(s, str) or (isinstance(s, list) and s and all(is_int(n) and n >= 0 for n in s)) for s in value
    )


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 40 else text[:37] + '...'}"
