"""What the user-form tests share (torch, JAX, Keras, NumPy forms): fixture paths, the two call
styles, and the assertions on a report's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normcheck.verify.records import ERROR, FAIL, PASS, SKIP

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")
DEFAULTS = " (defaults)"  # the suffix of an implementation's name in the defaults call style
CORRECT_FUNCTIONS = {
    "gn": "group_norm",
    "ln": "layer_norm",
    "bn": "batch_norm",
    "in": "instance_norm",
    "rms": "rms_norm",
}


def spec(path: Path, name: str) -> str:
    """The --impl SPEC of ``name`` in ``path``."""
    return f"{path}:{name}"


def bad_rows(report: Any) -> list[tuple]:
    """Every row that is neither a pass nor a skip with a reason."""
    return [
        (r["impl"], r["shape"], r["params"], r["dtype"], r["input"], r["layout"], r["check"], r["status"], r["message"])
        for r in report.records
        if not (r["status"] == PASS or (r["status"] == SKIP and r["message"]))
    ]


def by_style(report: Any) -> dict[bool, list[dict]]:
    """The records of each call style: False explicit, True defaults."""
    out: dict[bool, list[dict]] = {False: [], True: []}
    for r in report.records:
        out[r["impl"].endswith(DEFAULTS)].append(r)
    return out


def styles(report: Any) -> set[bool]:
    """Which call styles ran: False explicit, True defaults."""
    return {style for style, rows in by_style(report).items() if rows}


def passed_checks(report: Any) -> set[str]:
    return {r["check"] for r in report.records if r["status"] == PASS}


def expected_checks(op: str) -> set[str]:
    """The checks a correct implementation of ``op`` passes (running statistics for bn and in)."""
    want = {"forward", "grad_input", "grad_weight"} | (set() if op == "rms" else {"grad_bias"})
    return want | ({"running_mean", "running_var"} if op in ("bn", "in") else set())


def assert_diagnosed(report: Any, hypothesis: str) -> None:
    """The report fails (without errors), and ``hypothesis`` is named for a failing check."""
    failing = [r for r in report.records if r["status"] == FAIL]
    assert failing, "the buggy fixture passed"
    assert not [r for r in report.records if r["status"] == ERROR]
    found = {r["diagnosis"]["hypothesis"] for r in failing if r["diagnosis"]}
    assert hypothesis in found, found
