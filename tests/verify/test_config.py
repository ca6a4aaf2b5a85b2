"""The config file: every mistake is one UsageError naming the file; every value, 0 too, is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from normcheck.errors import UsageError
from normcheck.verify.config import find_config, load_config


def config(tmp_path: Path, body: str, name: str = "normcheck.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_a_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "normcheck.toml"
    path.write_bytes(b'[[check]]\nop = "gn"\nname = "caf\xe9"\n')
    assert "not UTF-8 text (byte 0xe9 at offset 31)" in refused(path)


def test_a_pyproject_that_is_not_utf8_is_a_usage_error_when_searched(tmp_path):
    (tmp_path / "pyproject.toml").write_bytes(b"[project]\nname = '\xff'\n")
    with pytest.raises(UsageError, match=r"pyproject\.toml: not UTF-8 text"):
        find_config(tmp_path)


@pytest.mark.parametrize(
    "body, name",
    [
        ("[[check]]\n", "normcheck.toml"),
        ('[[check]]\nname = "everything"\nrtol = 1e-3\natol = 1e-3\n', "normcheck.toml"),
        ("[[check]]\nop = []\n", "normcheck.toml"),
        ('[[check]]\nop = ""\n', "normcheck.toml"),
        ("[tool.normcheck]\n[[tool.normcheck.check]]\n", "pyproject.toml"),
    ],
)
def test_a_check_that_selects_nothing_is_refused(tmp_path, body, name):
    message = refused(config(tmp_path, body, name))
    assert message.endswith("check 1 selects nothing; give at least op or impl")


def test_the_empty_check_is_named_by_its_number(tmp_path):
    message = refused(config(tmp_path, '[[check]]\nop = "gn"\n[[check]]\n'))
    assert "check 2 selects nothing" in message


def test_a_default_op_above_the_checks_selects_for_them(tmp_path):
    [request] = load_config(config(tmp_path, 'op = "gn"\n[[check]]\nname = "all gn"\n'))
    assert request.ops == "gn"


def test_zero_is_a_value_not_an_absence(tmp_path):
    body = (
        'momentum = 0\nseed = 0\n[[check]]\nop = "bn"\nrtol = 0\natol = 0\n'
        '[[check]]\nop = "bn"\nrtol = 0.0\natol = 0.0\n'
    )
    for request in load_config(config(tmp_path, body)):
        assert request.momentum == 0 and request.momentum is not None
        assert request.rtol == 0 and request.rtol is not None
        assert request.atol == 0 and request.atol is not None
        assert request.seed == 0


def test_a_check_overrides_a_default_with_zero(tmp_path):
    [request] = load_config(config(tmp_path, 'momentum = 0.1\n[[check]]\nop = "bn"\nmomentum = 0\n'))
    assert request.momentum == 0


@pytest.mark.parametrize(
    "body, reason",
    [
        ('[[check]]\nop = "bn"\neps = 0\n', "[check][1].eps: must be positive, got 0"),
        ('eps = -1e-5\n[[check]]\nop = "bn"\n', "eps: must be positive, got -1e-05"),
        ('[[check]]\nop = "bn"\nmomentum = 1.5\n', "momentum: must be in [0, 1], got 1.5"),
        ('[[check]]\nop = "bn"\nrtol = -1\natol = 0\n', "rtol: must be not negative, got -1"),
        ('[[check]]\nop = "bn"\nrtol = nan\natol = 0\n', "rtol: must be a finite number, got nan"),
        ('[[check]]\nop = "bn"\natol = inf\nrtol = 0\n', "atol: must be a finite number, got inf"),
        ('[[check]]\nop = "bn"\ntimeout = 0\n', "timeout: must be positive, got 0"),
        ('[[check]]\nop = "gn"\ngroups = [2, 0]\n', "groups: must be positive, got [2, 0]"),
        ('[[check]]\nop = "ln"\nnormalized_ndim = 0\n', "normalized_ndim: must be positive, got 0"),
        ('[[check]]\nop = "gn"\nshapes = ["2,0,3"]\n', "shapes: malformed shape '2,0,3'"),
    ],
)
def test_values_out_of_range_name_the_file_and_key(tmp_path, body, reason):
    assert reason in refused(config(tmp_path, body))
