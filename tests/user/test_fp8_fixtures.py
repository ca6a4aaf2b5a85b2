"""Norms with FP8-quantized output end to end: the fixtures of fixtures/fp8_norms.py (PyTorch user
code, correct and buggy) through ``normcheck verify --config`` (one run, one set of workers),
each correct one passing, each buggy one failing with the diagnosis that names its mistake; and
the Python API's keywords."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _require import require
from typer.testing import CliRunner

import normcheck
from normcheck.errors import UsageError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fp8_norms.py"

# (name, op, format, scale)
CORRECT = [
    ("rms_norm_fp8", "rms", "e4m3", "row"),
    ("rms_norm_fp8_e5m2", "rms", "e5m2", "row"),
    ("rms_norm_fp8_per_tensor", "rms", "e4m3", "tensor"),
    ("rms_norm_fp8_static", "rms", "e4m3", "static"),
    ("rms_norm_fp8_static_e5m2", "rms", "e5m2", "static"),
    ("layer_norm_fp8", "ln", "e4m3", "row"),
    ("RMSNormFP8", "rms", "e4m3", "row"),
]
# (name, op, format, scale, the hypothesis its failures must name)
BUGGY = [
    ("rms_norm_fp8_static_scale_roundtrip", "rms", "e4m3", "static", "scale_one_ulp"),
    ("rms_norm_fp8_static_e5m2_no_clamp", "rms", "e5m2", "static", "no_saturation"),
    ("rms_norm_fp8_tensor_scale", "rms", "e4m3", "row", "tensor_scale"),
    ("rms_norm_fp8_fnuz_max", "rms", "e4m3", "row", "fp8_max_240"),
    ("rms_norm_fp8_e4m3fnuz", "rms", "e4m3", "row", "format_e4m3fnuz"),
    ("rms_norm_fp8_amax_of_input", "rms", "e4m3", "row", "amax_of_input"),
]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, list[dict]]:
    """Every fixture checked in one verify run: its rows by implementation (both call styles)."""
    require("torch")
    lines = ['dtypes = ["float32", "bfloat16"]', 'inputs = ["normal", "half_range"]', 'framework = "torch"']
    for name, op, fmt, scale, *_ in CORRECT + BUGGY:
        lines += ["[[check]]", f'name = "{name}"', f'op = "{op}"', f'impl = "{FIXTURES}:{name}"']
        lines += [f'quantize = "{fmt}"', f'scale = "{scale}"']
    config = tmp_path_factory.mktemp("fp8") / "normcheck.toml"
    config.write_text("\n".join(lines) + "\n")
    from normcheck.cli import app

    result = CliRunner().invoke(app, ["verify", "--config", str(config), "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 1, result.output  # the buggy ones fail
    by_impl: dict[str, list[dict]] = {}
    for row in json.loads(result.stdout)["results"]:
        by_impl.setdefault(row["impl"].removesuffix(" (defaults)"), []).append(row)
    return by_impl


@pytest.mark.parametrize(("name", "op", "fmt", "scale"), CORRECT, ids=[c[0] for c in CORRECT])
def test_correct_fixtures_pass(records, name, op, fmt, scale):
    rows = records[name]
    bad = [(r["check"], r["message"]) for r in rows if r["status"] in ("fail", "error")]
    assert not bad, bad[:3]
    checked = {r["check"] for r in rows if r["status"] == "pass"}
    assert checked == ({"quantized"} if name == "rms_norm_fp8_static_e5m2" else {"quantized", "scale"})
    assert all(r["params"].endswith(f"fp8 {fmt} {scale}") for r in rows)


@pytest.mark.parametrize(("name", "op", "fmt", "scale", "hypothesis"), BUGGY, ids=[b[0] for b in BUGGY])
def test_buggy_fixtures_fail_with_their_diagnosis(records, name, op, fmt, scale, hypothesis):
    failing = [r for r in records[name] if r["status"] == "fail"]
    assert failing
    for r in failing:
        d = r["diagnosis"]
        assert d is not None and d["hypothesis"] == hypothesis, (r["check"], r["message"], d)
        assert not d["ambiguous"] and d["fix"] and "->" in d["evidence"]
    assert not [r for r in records[name] if r["status"] == "error"]


def test_gradients_are_skipped_with_the_reason(records):
    grads = [r for r in records["rms_norm_fp8"] if r["check"].startswith("grad_")]
    assert grads and {r["status"] for r in grads} == {"skip"}
    assert all("inference" in r["message"] for r in grads)


def test_the_api_takes_quantize_and_scale():
    require("torch")
    report = normcheck.check(
        "rms",
        f"{FIXTURES}:rms_norm_fp8_static",
        framework="torch",
        quantize="e4m3",
        scale="static",
        shapes=[(4, 16)],
        dtypes="float32",
        kinds="normal",
        jobs=1,
    )
    assert report.ok and {r.check for r in report.results if r.status == "pass"} == {"quantized", "scale"}


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"quantize": "e4m3", "scale": "block"}, "unknown scale 'block'; choose from row, tensor, static"),
        ({"scale": "row"}, "give --quantize too"),
        ({"quantize": "fp8"}, "unknown FP8 format 'fp8'; choose from e4m3, e5m2"),
    ],
)
def test_the_api_refuses_bad_values(options, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        normcheck.check("rms", f"{FIXTURES}:rms_norm_fp8", framework="torch", **options)


@pytest.mark.parametrize(("name", "op", "fmt", "scale"), CORRECT, ids=[c[0] for c in CORRECT])
def test_correct_fixtures_pass_on_empty_rows_and_batches(name, op, fmt, scale):
    """No rows, or rows of no elements: amax is 0 (the reference's rule), and no error rows."""
    require("torch")
    report = normcheck.check(
        op, f"{FIXTURES}:{name}", framework="torch", quantize=fmt, scale=scale, shapes=["4,0", "0,8"], jobs=1
    )
    assert report.ok and not report.counts["error"], [r.message for r in report.failing()][:3]
