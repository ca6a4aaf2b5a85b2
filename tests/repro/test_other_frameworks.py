"""End to end on the other frameworks' documented defects: ONNX Runtime's one-pass group norm
(its model built by the script with onnx.helper), TensorFlow's raw half-precision ops and Flax's
default one-pass variance each reproduce without normcheck."""

from __future__ import annotations

import pytest
from _require import require
from _scripts import assert_standalone, run_scripts
from typer.testing import CliRunner

from normcheck.cli import app

GN = ["--op", "gn", "--shape", "2,8,4,4", "--groups", "4", "--input", "large_mean", "--jobs", "1"]
# framework -> (its dtype, the script to run: a glob)
DEFECTS = {
    "onnxruntime": ("float32", "onnxruntime_onnx.GroupNormalization_gn_forward_known_defect_*.py"),
    "tensorflow": ("float16", "tensorflow_tf.nn.moments_batch_normalization_gn_forward_known_defect_*.py"),
    "jax": ("float32", "jax_flax.linen.GroupNorm_gn_grad_input_known_defect_*.py"),
}


@pytest.mark.parametrize(
    "framework", [pytest.param(f, marks=[pytest.mark.slow] if f != "onnxruntime" else []) for f in DEFECTS]
)
def test_a_documented_defect_reproduces_without_normcheck(framework, tmp_path):
    require(framework)
    dtype, pattern = DEFECTS[framework]
    repro = tmp_path / "repro"
    args = ["verify", "--framework", framework, *GN, "--dtype", dtype, "--repro", str(repro)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [script] = repro.glob(pattern)
    assert_standalone(script)
    [done] = run_scripts([script], tmp_path)
    assert done.code == 1, done.stdout
    assert "observed max abs error" in done.stdout and "reproduced:" in done.stdout
