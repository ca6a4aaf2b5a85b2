"""Reading a bench JSON back into records (for --compare)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from normcheck.bench.records import STATUSES, BenchCase, BenchReport, BenchResult
from normcheck.errors import UsageError
from normcheck.report.json_document import SCHEMAS

TEXT_FIELDS = ("op", "params", "dtype", "framework", "impl", "device", "pass", "mode", "layout", "status")
OPTIONAL_TEXT = ("model", "reason", "timer", "notes")
OPTIONAL_NUMBERS = ("first_call_s", "compile_s", "copy_gbps", "dram_gbps", "baseline_s")
OPTIONAL_INTS = ("block", "bytes", "peak_memory_bytes", "threads")


def load_report(path: Path) -> BenchReport:
    """The run saved in ``path`` by ``bench --format json``; UsageError "--compare PATH: reason"
    for anything that is not one, so a bad baseline fails before the run, never after it."""
    where = f"--compare {path}"
    doc = _read_json(Path(path), where)
    if not isinstance(doc, dict) or doc.get("kind") != "bench":
        raise UsageError(f"{where}: not the JSON of a normcheck bench run (write one with --format json)")
    if doc.get("schema", SCHEMAS["bench"]) != SCHEMAS["bench"]:
        raise UsageError(
            f"{where}: written with bench JSON schema {doc.get('schema')!r} (normcheck {doc.get('normcheck')}); "
            f"this normcheck reads schema {SCHEMAS['bench']}: run the baseline again with this version"
        )
    rows = _results(doc, where)
    results = []
    for i, row in enumerate(rows, 1):
        try:
            results.append(result_from_row(row))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{where}: result {i} is malformed: {e}") from None
    if not any(r.measured for r in results):
        raise UsageError(f"{where}: none of its {len(results)} results was measured; nothing to compare against")
    env, settings = (_table(doc, key, where) for key in ("env", "settings"))
    report = BenchReport(env=env, settings=settings, results=results)
    report.interrupted = bool(doc.get("interrupted", False))
    return report


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"{where}: cannot read it: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{where}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: not JSON: {e}") from None


def _results(doc: dict[str, Any], where: str) -> list[Any]:
    if "results" not in doc:
        raise UsageError(f"{where}: has no 'results' list")
    rows = doc["results"]
    if not isinstance(rows, list):
        raise UsageError(f"{where}: 'results' must be a list, got {type(rows).__name__}")
    if not rows:
        raise UsageError(f"{where}: 'results' is empty; nothing to compare against")
    return rows


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where}: '{key}' must be an object, got {type(value).__name__}")
    return value


def _check_row(row: Any) -> None:
    """ValueError naming the first field missing or of the wrong type."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
    for key in (*TEXT_FIELDS, "shape"):
        if key not in row:
            raise ValueError(f"missing field {key!r}")
    for key in (*TEXT_FIELDS, "shape"):
        _expect(row, key, isinstance(row[key], str), "a string")
    for key in OPTIONAL_TEXT:
        _expect(row, key, row.get(key) is None or isinstance(row[key], str), "a string")
    for key in OPTIONAL_NUMBERS:
        _expect(row, key, row.get(key) is None or _is_number(row[key]), "a number")
    for key in OPTIONAL_INTS:
        _expect(row, key, row.get(key) is None or _is_int(row[key]), "an integer")
    _expect(row, "block", row.get("block") is None or row["block"] >= 1, "at least 1")
    _expect(row, "converged", row.get("converged") is None or isinstance(row["converged"], bool), "true or false")
    samples = row.get("samples_s")
    fits = samples is None or (isinstance(samples, list) and all(_is_number(s) and s > 0 for s in samples))
    _expect(row, "samples_s", fits, "a list of positive numbers")


def _expect(row: dict[str, Any], key: str, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"field {key!r} must be {what}, got {row[key]!r:.40}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.split("x"))
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"field 'shape' must be sizes joined by x such as 2x64x8x8, got {text!r:.40}")
    return shape


def result_from_row(row: dict[str, Any]) -> BenchResult:
    """One record from one JSON row; ValueError naming the field that is missing or wrong."""
    _check_row(row)
    if row["status"] not in STATUSES:
        raise ValueError(f"unknown status {row['status']!r}; expected one of {', '.join(STATUSES)}")
    case = BenchCase(
        op=row["op"],
        shape=_shape(row["shape"]),
        params=row["params"],
        dtype=row["dtype"],
        framework=row["framework"],
        impl=row["impl"],
        device=row["device"],
        pass_=row["pass"],
        mode=row["mode"],
        layout=row["layout"],
        model=row.get("model") or "",
    )
    notes = tuple(n for n in (row.get("notes") or "").split("; ") if n)
    return BenchResult(
        case,
        status=row["status"],
        reason=row.get("reason") or "",
        samples=tuple(float(s) for s in row.get("samples_s") or ()),
        block=1 if row.get("block") is None else row["block"],
        timer=row.get("timer") or "",
        converged=row.get("converged") is not False,
        first_call_s=row.get("first_call_s"),
        compile_s=row.get("compile_s"),
        bytes_moved=row.get("bytes"),
        peak_memory=row.get("peak_memory_bytes"),
        copy_gbps=row.get("copy_gbps"),
        dram_gbps=row.get("dram_gbps"),
        baseline_s=row.get("baseline_s"),
        threads=row.get("threads"),
        notes=notes,
    )
