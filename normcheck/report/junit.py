"""JUnit XML: one testcase per check, so CI systems list every failure with its message."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from xml.etree import ElementTree as ET

from normcheck.report._xml import make_tree_safe

CASE_FIELDS = ("shape", "params", "dtype", "layout", "input", "device")


def _case_name(r: dict[str, Any]) -> str:
    name = " ".join(str(r[k]) for k in CASE_FIELDS if r.get(k) not in (None, "", "-"))
    return f"{name} {r['check']}" + (f" vs {r['against']}" if r.get("against") else "")


def _details(r: dict[str, Any]) -> str:
    lines = [r["message"]]
    for key, label in (
        ("max_abs_err", "max abs err"),
        ("max_rel_err", "max rel err"),
        ("tolerance", "tolerance"),
        ("worst_index", "worst index"),
    ):
        if r.get(key) is not None:
            lines.append(f"{label}: {r[key]}")
    if r.get("diagnosis"):
        d = r["diagnosis"]
        lines.append(f"diagnosis: {d['cause'] if d['hypothesis'] else 'cause unknown'}")
        lines.append(f"evidence: {d['evidence']}")
    return "\n".join(lines)


def render_junit(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    strict = bool(summary.get("strict"))
    suites: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        suites[f"normcheck.{r['op']}.{r['framework']}.{r['impl']}"].append(r)
    root = ET.Element("testsuites", name="normcheck verify")
    totals: defaultdict[str, int] = defaultdict(int)
    for suite_name, rows in suites.items():
        suite = ET.SubElement(root, "testsuite", name=suite_name)
        counts: defaultdict[str, int] = defaultdict(int)
        for r in rows:
            case = ET.SubElement(suite, "testcase", classname=suite_name, name=_case_name(r))
            status = r["status"]
            if status == "fail" or (status == "known" and strict):
                summary_line = r["message"].splitlines()[0] if r["message"] else status
                ET.SubElement(case, "failure", message=summary_line[:500], type=status).text = _details(r)
                counts["failures"] += 1
            elif status == "error":
                ET.SubElement(case, "error", message=r["message"][:500], type="error").text = _details(r)
                counts["errors"] += 1
            elif status == "skip":
                ET.SubElement(case, "skipped", message=r["message"][:500])
                counts["skipped"] += 1
            elif status == "known":
                ET.SubElement(case, "system-out").text = r["message"]
        suite.set("tests", str(len(rows)))
        for key in ("failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
            totals[key] += counts[key]
        totals["tests"] += len(rows)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    if "seconds" in summary:
        root.set("time", f"{summary['seconds']:.3f}")
    make_tree_safe(root)  # messages quote what implementations raised: any character at all
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
