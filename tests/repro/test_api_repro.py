"""The Python API writes reproducers too: normcheck.check(..., repro=DIR)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.errors import UsageError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "torch_functional.py"


def test_check_with_repro_writes_the_failures_scripts_and_index(tmp_path):
    require("torch")
    report = normcheck.check(
        "gn",
        f"{FIXTURE}:group_norm_unbiased_var",
        framework="torch",
        shapes=[(2, 8, 4, 4)],
        groups=4,
        dtypes="float32",
        kinds="normal",
        jobs=1,
        repro=tmp_path / "repro",
    )
    assert not report.ok
    scripts = sorted(p.name for p in (tmp_path / "repro").glob("*.py"))
    assert scripts and all(s.startswith("user_group_norm_unbiased_var_") for s in scripts), scripts
    index = (tmp_path / "repro" / "README.md").read_text()
    assert f"Produced by: `normcheck.check('gn', '{FIXTURE}:group_norm_unbiased_var', framework='torch'" in index


def test_check_refuses_a_repro_folder_it_cannot_write_before_running(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is not a folder"):
        normcheck.check("gn", "no/such/file.py:f", framework="torch", repro=tmp_path / "file" / "repro")
