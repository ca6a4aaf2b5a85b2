"""--quantize and --scale misused: one line on stderr, exit 2, before anything is loaded or run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from normcheck.cli import app

IMPL = ["--impl", "mypkg/fused.py:rms_norm_fp8", "--framework", "torch"]  # never loaded: refused first


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--op", "gn", "--quantize", "e4m3", *IMPL], "--quantize: group norm (gn) has no FP8-quantized form"),
        (["--op", "bn", "--quantize", "e4m3", *IMPL], "the ops with one: rms, ln"),
        (["--op", "rms", "--scale", "row", *IMPL], "--scale says how an FP8-quantized output is scaled"),
        (["--op", "rms", "--scale", "static"], "give --quantize too"),
        (["--op", "rms", "--quantize", "e3m4", *IMPL], "unknown FP8 format 'e3m4'; choose from e4m3, e5m2"),
        (["--op", "rms", "--quantize", "e4m3", "--scale", "block", *IMPL], "unknown scale 'block'"),
        (["--quantize", "e4m3", *IMPL], "--quantize needs --op"),
        (["--op", "rms", "--quantize", "e4m3", "--against", "torch", *IMPL], "--against compares frameworks"),
        (["--op", "rms", "--quantize", "e4m3", "--profile", "quick", *IMPL], "check --quantize with the default"),
    ],
)
def test_misused_quantize_is_a_one_line_usage_error(args, needle):
    result = CliRunner().invoke(app, ["verify", *args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_frameworks_without_an_fp8_output_are_a_usage_error():
    """Only ONNX Runtime has a norm with FP8 output built in: without it (or --impl) nothing would run."""
    from _require import require

    require("torch")
    result = CliRunner().invoke(app, ["verify", "--op", "rms", "--quantize", "e4m3", "--framework", "torch"])
    assert result.exit_code == 2, result.output
    assert (
        "no framework checked has a norm with FP8-quantized output built in (torch); onnxruntime has" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_config_check_is_named_in_the_error(tmp_path):
    config = tmp_path / "normcheck.toml"
    config.write_text('[[check]]\nname = "fused"\nop = "gn"\nimpl = "mypkg/fused.py:f"\nquantize = "e5m2"\n')
    result = CliRunner().invoke(app, ["verify", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "normcheck: error: fused: --quantize: group norm (gn) has no FP8-quantized form; the ops with one: rms, ln"
    )


def test_quantize_cannot_be_combined_with_a_config(tmp_path):
    config = tmp_path / "normcheck.toml"
    config.write_text('[[check]]\nop = "rms"\nimpl = "mypkg/fused.py:f"\n')
    result = CliRunner().invoke(app, ["verify", "--config", str(config), "--quantize", "e4m3"])
    assert result.exit_code == 2 and "--quantize cannot be combined with --config" in result.stderr
