"""normcheck model on the command line (normcheck/cli/model.py): formats, --output, the summary
line, and one usage line with exit 2 for what is not a model. These run the model in this
process (NORMCHECK_INLINE=1, as most tests do); test_isolation.py runs real workers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _models import MODELS, ROOT
from _require import require

import normcheck.cli as cli
from normcheck.cli.model import NOT_YET

CNN = f"{MODELS}/torch_cnn.py:build"


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["normcheck", "model", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_list_prints_the_table_and_one_summary_line(monkeypatch, capsys):
    require("torch")
    code, out, err = run_main(monkeypatch, capsys, CNN, "--list")
    assert code == 0
    assert "torch.nn.BatchNorm2d" in out and "torch.nn.GroupNorm" in out and "0.2 (new)" in out
    assert err.startswith("normcheck model: 2 normalization layers (1 batch norm, 1 group norm) in ")
    assert len(err.splitlines()) == 1


def test_without_list_it_says_per_layer_checks_are_not_available_yet(monkeypatch, capsys):
    require("torch")
    code, out, err = run_main(monkeypatch, capsys, CNN, "--format", "csv")
    assert code == 0 and out.startswith("path,op,kind")
    assert err.splitlines()[-1] == NOT_YET and len(err.splitlines()) == 2


def test_json_to_a_file(monkeypatch, capsys, tmp_path):
    require("torch")
    target = tmp_path / "inventory.json"
    code, out, err = run_main(monkeypatch, capsys, CNN, "--list", "--format", "json", "--output", str(target))
    assert code == 0 and out == ""
    doc = json.loads(target.read_text())
    assert [layer["path"] for layer in doc["layers"]] == ["bn1", "gn2"]
    assert f"inventory in {target}" in err


def test_markdown(monkeypatch, capsys, tmp_path):
    require("onnxruntime", "onnx")
    from fixtures.models.onnx_graphs import decomposed_rms_norm, save

    path = save(decomposed_rms_norm(), str(tmp_path / "rms.onnx"))
    code, out, err = run_main(monkeypatch, capsys, path, "--list", "--format", "markdown")
    assert code == 0 and "| rms/cast_in..rms/mul_weight | decomposed RMS norm | rms |" in out
    assert "1 normalization layer (1 RMS norm)" in err


@pytest.mark.parametrize(
    "args, message",
    [
        ([CNN, "--format", "xml"], "unknown format 'xml'"),
        ([CNN, "--timeout", "0"], "--timeout must be positive"),
        (["nothing.onnx"], "nothing.onnx: no such file"),
        ([f"{MODELS}/hostile_models.py:NOT_A_MODEL"], "NOT_A_MODEL is an int, not a model"),
        ([CNN, "--output", "/nonexistent-dir/x.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, args, message):
    require("torch")
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("normcheck: error: ") and message in err and len(err.splitlines()) == 1


def test_help_imports_no_framework():
    code = (
        "import sys; sys.argv = ['normcheck', 'model', '--help']\n"
        "import normcheck.cli as cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'tensorflow', 'keras', 'jax', 'flax', 'onnx', 'onnxruntime')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Usage: normcheck model" in proc.stdout and "--list" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "[]"
