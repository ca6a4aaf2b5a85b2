"""End to end on PyTorch's documented CPU defects and a buggy user function: verify --repro writes
scripts that reproduce each without normcheck (exit 1, both errors printed), and a script pointed
at a correct implementation exits 0."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _require import require
from _scripts import assert_standalone, run_scripts
from typer.testing import CliRunner

require("torch")

from normcheck.cli import app
from normcheck.frameworks.torch.facts import KNOWN_ISSUES

ROOT = Path(__file__).resolve().parents[2]
TORCH = ["--framework", "torch", "--jobs", "1"]
# (the defect, the narrow run that shows it, the script to run: a glob, and the dtype it names)
DEFECTS = {
    "group norm channels-last one-pass variance": (
        ["--op", "gn", "--shape", "2,8,4,4", "--groups", "4", "--dtype", "float32", "--input", "large_mean"],
        "torch_F.group_norm_gn_forward_known_defect_*.py",
    ),
    "instance norm backward, batch 1, channels-last gradient": (
        ["--op", "in", "--shape", "1,4,5,5", "--dtype", "float64", "--input", "normal"],
        "torch_nn.InstanceNormNd_in_grad_input_known_defect_*.py",
    ),
    "half-precision batch norm statistics": (
        ["--op", "bn", "--shape", "8,4,4,4", "--dtype", "float16", "--input", "large_mean"],
        "torch_F.batch_norm_bn_forward_known_defect_*.py",
    ),
    "half-precision layer norm backward": (
        ["--op", "ln", "--shape", "4,64", "--normalized-ndim", "1", "--dtype", "float16", "--input", "large_mean"],
        "torch_F.layer_norm_ln_grad_weight_known_defect_*.py",
    ),
}


def verify(args: list[str]):
    return CliRunner().invoke(app, ["verify", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def defect_scripts(tmp_path_factory) -> dict[str, Path]:
    """Each defect's narrow run with --repro: the script of its glob."""
    scripts = {}
    for defect, (args, pattern) in DEFECTS.items():
        repro = tmp_path_factory.mktemp("repro")
        result = verify([*TORCH, *args, "--repro", str(repro)])
        assert result.exit_code == 0, result.output  # known defects do not fail the run
        assert f"reproducer(s) in {repro}" in result.stderr
        [scripts[defect]] = repro.glob(pattern)
    return scripts


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_a_documented_defect_gets_a_standalone_script(defect, defect_scripts):
    script = defect_scripts[defect]
    assert_standalone(script)
    n = int(script.stem.rpartition("_")[2])
    assert KNOWN_ISSUES[n - 1].cause in " ".join(script.read_text().split())
    index = (script.parent / "README.md").read_text()
    assert f"[{script.name}]({script.name})" in index
    assert "Produced by: `normcheck verify --op " in index and "--framework torch" in index


def test_each_documented_defect_reproduces_without_normcheck(defect_scripts, tmp_path):
    ran = run_scripts(list(defect_scripts.values()), tmp_path)
    for defect, done in zip(defect_scripts, ran, strict=True):
        assert done.code == 1, (defect, done.stdout)
        assert "observed max abs error" in done.stdout, defect
        assert "implementation errs by at most" in done.stdout, defect
        assert "reproduced:" in done.stdout, defect


def test_a_buggy_user_function_reproduces_and_the_correct_one_passes(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "fixtures" / "torch_functional.py", project / "norms.py")
    monkeypatch.chdir(project)
    impl = ["--impl", "norms.py:group_norm_unbiased_var", "--framework", "torch", "--jobs", "1"]
    case = ["--op", "gn", "--shape", "2,8,4,4", "--groups", "4", "--dtype", "float32", "--input", "normal"]
    result = verify([*impl, *case, "--repro", "repro"])
    assert result.exit_code == 1, result.output
    # scripts per call style (all options given; defaults left out), check and cause
    scripts = sorted(p.name for p in (project / "repro").glob("*.py"))
    assert all(s.startswith("user_group_norm_unbiased_var_") for s in scripts), scripts
    assert any(s.startswith("user_group_norm_unbiased_var_defaults_gn_forward_") for s in scripts), scripts
    [script] = (project / "repro").glob("user_group_norm_unbiased_var_gn_forward_*.py")
    assert_standalone(script)
    text = script.read_text()
    assert "IMPL = load_file('../norms.py', 'group_norm_unbiased_var')" in text
    assert "IMPL(x, 4, weight, bias, eps=0.0001)" in text  # normcheck's explicit eps, no framework's default
    correct = script.with_name("correct.py")  # the same script and data, pointed at the correct function
    correct.write_text(text.replace("'group_norm_unbiased_var')", "'group_norm')"))
    shutil.copy(script.with_suffix(".npz"), correct.with_suffix(".npz"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    buggy, fixed = run_scripts([script, correct], elsewhere)
    assert buggy.code == 1, buggy.stdout
    assert "observed max abs error" in buggy.stdout and "reproduced:" in buggy.stdout
    assert fixed.code == 0, fixed.stdout
    assert "not reproduced: forward is within tolerance" in fixed.stdout
