"""--compare's input: anything but the JSON of a bench run is one UsageError from load_report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from normcheck.bench.load import load_report
from normcheck.errors import UsageError

ROW = {
    "op": "gn",
    "shape": "2x64x8x8",
    "params": "G=32",
    "model": "",
    "dtype": "float32",
    "framework": "torch",
    "impl": "F.group_norm",
    "device": "cpu",
    "pass": "forward",
    "mode": "eager",
    "layout": "contiguous",
    "status": "ok",
    "reason": "",
    "block": 4,
    "timer": "perf_counter",
    "samples_s": [1e-3, 2e-3, 3e-3],
    "notes": "",
    "bytes": 1000,
    "threads": 1,
    "converged": True,
}


def write(tmp_path: Path, doc: Any, name: str = "old.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def run_doc(*rows: Any) -> dict[str, Any]:
    return {"kind": "bench", "env": {"cpu": "x"}, "settings": {}, "results": list(rows)}


def test_a_well_formed_run_loads(tmp_path):
    report = load_report(write(tmp_path, run_doc(ROW)))
    [result] = report.results
    assert result.case.shape == (2, 64, 8, 8) and result.samples == (1e-3, 2e-3, 3e-3) and result.block == 4


@pytest.mark.parametrize(
    "doc, reason",
    [
        ("{", "not JSON"),
        ("[1, 2]", "not the JSON of a normcheck bench run"),
        ('"results"', "not the JSON of a normcheck bench run"),
        ({"kind": "verify", "results": []}, "not the JSON of a normcheck bench run"),
        ({"kind": "bench"}, "has no 'results' list"),
        ({**run_doc(ROW), "schema": 2, "normcheck": "9.0"}, "written with bench JSON schema 2 (normcheck 9.0)"),
        ({"kind": "bench", "results": {"a": 1}}, "'results' must be a list, got dict"),
        ({"kind": "bench", "results": None}, "'results' must be a list, got NoneType"),
        (run_doc(), "'results' is empty; nothing to compare against"),
        (run_doc(7), "result 1 is malformed: expected an object, got int"),
        (run_doc(ROW, {k: v for k, v in ROW.items() if k != "impl"}), "result 2 is malformed: missing field 'impl'"),
        (run_doc({**ROW, "op": 5}), "field 'op' must be a string, got 5"),
        (run_doc({**ROW, "shape": [2, 64]}), "field 'shape' must be a string"),
        (run_doc({**ROW, "shape": "2x0x3"}), "field 'shape' must be sizes joined by x"),
        (run_doc({**ROW, "shape": "big"}), "field 'shape' must be sizes joined by x"),
        (run_doc({**ROW, "samples_s": "fast"}), "field 'samples_s' must be a list of positive numbers"),
        (run_doc({**ROW, "samples_s": [1e-3, 0]}), "field 'samples_s' must be a list of positive numbers"),
        (run_doc({**ROW, "samples_s": [1e-3, True]}), "field 'samples_s' must be a list of positive numbers"),
        (run_doc({**ROW, "block": "4"}), "field 'block' must be an integer"),
        (run_doc({**ROW, "block": 0}), "field 'block' must be at least 1"),
        (run_doc({**ROW, "bytes": 1.5}), "field 'bytes' must be an integer"),
        (run_doc({**ROW, "baseline_s": "1"}), "field 'baseline_s' must be a number"),
        (run_doc({**ROW, "converged": "yes"}), "field 'converged' must be true or false"),
        (run_doc({**ROW, "notes": ["a"]}), "field 'notes' must be a string"),
        (run_doc({**ROW, "status": "great"}), "unknown status 'great'"),
        (run_doc({**ROW, "status": "skip", "samples_s": []}), "none of its 1 results was measured"),
        ({**run_doc(ROW), "env": []}, "'env' must be an object, got list"),
    ],
)
def test_odd_json_is_one_usage_error_naming_the_option_and_file(tmp_path, doc, reason):
    path = write(tmp_path, doc)
    with pytest.raises(UsageError) as info:
        load_report(path)
    message = str(info.value)
    assert message.startswith(f"--compare {path}: ")
    assert reason in message
    assert "\n" not in message


def test_a_file_that_is_not_utf8_is_a_usage_error(tmp_path):
    path = tmp_path / "old.json"
    path.write_bytes(b'{"kind": "bench\xff"}')
    with pytest.raises(UsageError, match=r"not UTF-8 text \(byte 0xff at offset 15\)"):
        load_report(path)


def test_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read it"):
        load_report(tmp_path / "missing.json")
