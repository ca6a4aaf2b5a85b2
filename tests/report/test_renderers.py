"""The verify renderers, each a function from records (and the summary) to text: hand-built
records of every status go in, nothing is run, and the text that comes out is read back."""

from __future__ import annotations

import csv
import io
import json
import re
from xml.etree import ElementTree as ET

import pytest
from rich.console import Console
from rich.table import Table

from normcheck import __version__
from normcheck.ops import OpParams
from normcheck.report import FORMATS, render
from normcheck.report.csv import render_csv
from normcheck.report.github import render_github
from normcheck.report.json import render_json
from normcheck.report.junit import render_junit
from normcheck.report.markdown import markdown_table
from normcheck.report.table import render_table
from normcheck.report.verify_markdown import MAX_ROWS, render_verify_markdown
from normcheck.verify.records import (
    ERROR,
    FAIL,
    KNOWN,
    PASS,
    SKIP,
    STATUSES,
    Case,
    CheckResult,
    Comparison,
    Diagnosis,
    Tolerance,
    load_error_row,
    summarize,
)

GN = Case("gn", "torch", "F.group_norm", (2, 6, 5, 5), OpParams(groups=3), "float32", "normal")
BN = Case(
    "bn",
    "tensorflow",
    "BatchNormalization",
    (4, 3, 5),
    OpParams(mode="eval", running_stats=True),
    "float16",
    "large_mean",
)
TOL = Tolerance(rtol=1.3e-6, atol=1e-5, floor_atol=1e-5, witness_err=0.0, source="dtype")
COND = Tolerance(rtol=1.3e-6, atol=2.5e-5, floor_atol=1e-5, witness_err=1.875e-6, source="dtype")
BESSEL = Diagnosis(
    "unbiased_variance",
    "variance divides by N-1 (Bessel-corrected) instead of N",
    "grad_input: max abs err 0.012 -> 3e-07 under 'variance divides by N-1' (allowed 2.5e-05 + 1.3e-06*|expected|)",
)
UNKNOWN = Diagnosis(None, "unknown", "none of the 21 known mistakes normcheck tests reproduces this output")
HOSTILE = 'returned <tensor> & "nan" | bad\x07bell'

RESULTS = [
    CheckResult(GN, "forward", PASS, Comparison(1.25e-7, 3.5e-7, 0, 300, (0, 1, 2, 3)), TOL),
    CheckResult(
        GN,
        "grad_input",
        FAIL,
        Comparison(0.0123, 0.5, 12, 300, (1, 2, 3, 4)),
        COND,
        "12/300 elements (4%) beyond tolerance; worst at [1, 2, 3, 4]: got 0.5, expected 0.49",
        diagnosis=BESSEL,
    ),
    CheckResult(
        GN,
        "forward",
        FAIL,
        Comparison(float("inf"), float("inf"), 1, 300, (0, 0, 0, 0)),
        TOL,
        "1/300 elements (0.333%) beyond tolerance; worst at [0, 0, 0, 0]: got inf, expected 1",
        against="jax:flax.linen.GroupNorm",
        diagnosis=UNKNOWN,
    ),
    CheckResult(
        BN,
        "running_var",
        KNOWN,
        Comparison(0.5, 0.01, 3, 3, (2,)),
        TOL,
        "known defect: one-pass variance in Keras. 3/3 elements (100%) beyond tolerance",
    ),
    CheckResult(BN, "grad_weight", ERROR, message=HOSTILE),
    CheckResult(BN, "grad_bias", SKIP, message="expected values reach 7e+04, beyond float16's largest 6.55e+04"),
]
RECORDS = [r.as_dict() for r in RESULTS]
SUMMARY = {**summarize(RESULTS), "cases": 2, "seconds": 1.25, "translations": [], "strict": False}


def test_the_records_hold_every_status():
    assert {r["status"] for r in RECORDS} == set(STATUSES)
    assert SUMMARY == {
        "pass": 1,
        "fail": 2,
        "known": 1,
        "error": 1,
        "skip": 1,
        "cases": 2,
        "seconds": 1.25,
        "translations": [],
        "strict": False,
    }


# -- render() dispatches to each format's renderer -------------------------------------------------


def test_render_dispatches_each_text_format():
    assert FORMATS == ("table", "csv", "json", "junit", "markdown", "github")
    assert render("github", RECORDS, SUMMARY) == render_github(RECORDS, SUMMARY)
    assert render("csv", RECORDS, SUMMARY) == render_csv(RECORDS)
    assert render("junit", RECORDS, SUMMARY) == render_junit(RECORDS, SUMMARY)
    assert render("markdown", RECORDS, SUMMARY) == render_verify_markdown(RECORDS, SUMMARY)
    assert render("json", RECORDS, SUMMARY) == render_json(RECORDS, SUMMARY)


def _text(renderable, width=200) -> str:
    console = Console(file=io.StringIO(), record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_render_table_passes_show_all_and_the_translation_notes():
    summary = {**SUMMARY, "translations": ["momentum 0.1 given to Keras as 0.9"]}
    text = _text(render("table", RECORDS, summary, show_all=True))
    assert "translated: momentum 0.1 given to Keras as 0.9" in text
    assert "group norm (gn): all checks" in text
    assert "failures and errors" not in text


# -- CSV -------------------------------------------------------------------------------------------

CSV_HEADER = (
    "op,framework,impl,device,shape,params,dtype,layout,input,check,against,status,"
    "max_abs_err,max_rel_err,mismatched_pct,worst_index,worst_got,worst_expected,tolerance,rtol,atol,message,diagnosis"
)


def test_csv_header_and_a_passing_row_exactly():
    lines = render_csv(RECORDS[:1]).splitlines()
    assert lines == [
        CSV_HEADER,
        "gn,torch,F.group_norm,cpu,2x6x5x5,G=3,float32,contiguous,normal,forward,,pass,"
        "1.25e-07,3.5e-07,0.0,0 1 2 3,,,rtol=1.3e-06 atol=1.0e-05,1.3e-06,1e-05,,",
    ]


def test_csv_has_one_row_per_record_that_reads_back():
    text = render_csv(RECORDS)
    assert text.splitlines()[0] == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["status"] for r in rows] == [PASS, FAIL, FAIL, KNOWN, ERROR, SKIP]
    fail, against = rows[1], rows[2]
    assert fail["check"] == "grad_input"
    assert fail["tolerance"] == "rtol=1.3e-06 atol=2.5e-05 (cond)"
    assert fail["worst_index"] == "1 2 3 4"
    assert fail["diagnosis"] == BESSEL.summary
    assert fail["diagnosis"].startswith("variance divides by N-1 (Bessel-corrected) instead of N (grad_input: ")
    assert against["against"] == "jax:flax.linen.GroupNorm"
    assert against["max_abs_err"] == "inf"
    assert against["diagnosis"].startswith("cause unknown (none of the 21")
    assert rows[4]["message"] == HOSTILE  # quotes and the pipe survive CSV quoting
    assert rows[4]["max_abs_err"] == rows[4]["tolerance"] == rows[4]["diagnosis"] == ""
    assert rows[3]["params"] == "eval" and rows[3]["dtype"] == "float16" and rows[3]["input"] == "large_mean"


def test_csv_quotes_a_message_with_commas_and_newlines():
    r = CheckResult(GN, "forward", ERROR, message='Traceback, line 1\nValueError: "x", y').as_dict()
    [row] = list(csv.DictReader(io.StringIO(render_csv([r]))))
    assert row["message"] == 'Traceback, line 1\nValueError: "x", y'


# -- JSON ------------------------------------------------------------------------------------------


def test_json_round_trips_the_summary_and_every_record():
    doc = json.loads(render_json(RECORDS, SUMMARY))
    assert doc == {"normcheck": __version__, "kind": "verify", "schema": 1, "summary": SUMMARY, "results": RECORDS}
    assert doc["results"][2]["max_abs_err"] == "inf"  # JSON has no infinity: it travels as a string
    assert doc["results"][1]["diagnosis"] == {
        "hypothesis": "unbiased_variance",
        "cause": BESSEL.cause,
        "evidence": BESSEL.evidence,
        "scope": "case",
        "also": [],
        "fix": "",
        "family": "",
        "ambiguous": False,
        "summary": BESSEL.summary,
    }


def test_json_is_strict_json_and_ends_with_a_newline():
    text = render_json(RECORDS, SUMMARY)
    assert text.endswith("}\n")
    assert "Infinity" not in text and "NaN" not in text
    with pytest.raises(ValueError):
        render_json([{"max_abs_err": float("nan")}], {})


# -- JUnit -----------------------------------------------------------------------------------------


def _junit(records=RECORDS, summary=SUMMARY) -> ET.Element:
    text = render_junit(records, summary)
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<testsuites ')
    return ET.fromstring(text.encode("utf-8"))


def test_junit_has_one_testcase_per_record_in_suites_by_implementation():
    root = _junit()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "normcheck.gn.torch.F.group_norm",
        "normcheck.bn.tensorflow.BatchNormalization",
    ]
    assert len(root.findall(".//testcase")) == len(RECORDS)
    assert [len(s.findall("testcase")) for s in suites] == [3, 3]
    assert {c.get("classname") for c in suites[0]} == {"normcheck.gn.torch.F.group_norm"}
    assert [c.get("name") for c in suites[0]] == [
        "2x6x5x5 G=3 float32 contiguous normal cpu forward",
        "2x6x5x5 G=3 float32 contiguous normal cpu grad_input",
        "2x6x5x5 G=3 float32 contiguous normal cpu forward vs jax:flax.linen.GroupNorm",
    ]


def test_junit_counts_per_suite_and_in_total():
    root = _junit()
    gn, bn = root.findall("testsuite")
    assert {k: gn.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "3",
        "failures": "2",
        "errors": "0",
        "skipped": "0",
    }
    assert {k: bn.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "3",
        "failures": "0",
        "errors": "1",
        "skipped": "1",
    }
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "6",
        "failures": "2",
        "errors": "1",
        "skipped": "1",
        "time": "1.250",
    }


def test_junit_marks_each_status_with_its_element():
    cases = _junit().findall(".//testcase")
    assert [[child.tag for child in c] for c in cases] == [
        [],  # pass
        ["failure"],
        ["failure"],
        ["system-out"],  # known, not strict: reported, not failed
        ["error"],
        ["skipped"],
    ]
    failure = cases[1].find("failure")
    assert failure.get("type") == FAIL
    assert failure.get("message") == RECORDS[1]["message"]
    assert failure.text.splitlines() == [
        RECORDS[1]["message"],
        "max abs err: 0.0123",
        "max rel err: 0.5",
        "tolerance: rtol=1.3e-06 atol=2.5e-05 (cond)",
        "worst index: [1, 2, 3, 4]",
        f"diagnosis: {BESSEL.cause}",
        f"evidence: {BESSEL.evidence}",
    ]
    assert "diagnosis: cause unknown" in cases[2].find("failure").text
    assert "max abs err: inf" in cases[2].find("failure").text
    assert cases[3].find("system-out").text == RECORDS[3]["message"]
    assert cases[5].find("skipped").get("message") == RECORDS[5]["message"]


def test_junit_strict_turns_a_known_defect_into_a_failure():
    root = _junit(summary={**SUMMARY, "strict": True})
    known = root.findall(".//testcase")[3]
    assert [child.tag for child in known] == ["failure"]
    assert known.find("failure").get("type") == KNOWN
    assert known.find("failure").get("message") == RECORDS[3]["message"]
    assert root.get("failures") == "3"


def test_junit_escapes_markup_and_control_characters():
    text = render_junit(RECORDS, SUMMARY)
    assert "<tensor>" not in text and "&lt;tensor&gt; &amp; " in text
    error = ET.fromstring(text).findall(".//testcase")[4].find("error")
    assert error.get("type") == ERROR
    assert error.get("message") == 'returned <tensor> & "nan" | bad\\x07bell'
    assert error.text.splitlines()[0] == 'returned <tensor> & "nan" | bad\\x07bell'


def test_junit_keeps_only_the_first_line_and_500_characters_in_the_failure_message():
    long = "x" * 600 + "\nsecond line"
    r = CheckResult(GN, "forward", FAIL, Comparison(1.0, 1.0, 1, 1, (0,)), TOL, long).as_dict()
    failure = _junit([r]).find(".//failure")
    assert failure.get("message") == "x" * 500
    assert failure.text.startswith(long)


def test_junit_names_a_load_error_row_without_its_placeholder_fields():
    row = load_error_row("gn", "mypkg/layers.py:Norm", "cannot import mypkg").as_dict()
    root = _junit([row], {"strict": False})
    case = root.find(".//testcase")
    assert root.find("testsuite").get("name") == "normcheck.gn.user.mypkg/layers.py:Norm"
    assert case.get("name") == "contiguous cpu run"  # shape "", params and dtype "-" are left out
    assert case.find("error").get("message") == "cannot import mypkg"
    assert root.get("time") is None


def test_junit_of_no_records_is_an_empty_suite_list():
    root = _junit([], {})
    assert root.findall("testsuite") == []
    assert root.get("tests") == "0" and root.get("failures") == "0"


# -- Markdown --------------------------------------------------------------------------------------


def test_markdown_gives_the_verdict_the_counts_and_a_summary_per_implementation():
    text = render_verify_markdown(RECORDS, SUMMARY)
    lines = text.splitlines()
    assert lines[0] == "### normcheck verify: FAILED"
    assert lines[1] == "1 pass, 2 fail, 1 known, 1 error, 1 skip (2 cases, 1.2 s)"
    assert "| op | framework | impl | pass | fail | known | error | skip |" in lines
    assert "| gn | torch | F.group_norm | 1 | 2 | 0 | 0 | 0 |" in lines
    assert "| bn | tensorflow | BatchNormalization | 0 | 0 | 1 | 1 | 1 |" in lines


def test_markdown_lists_the_failures_and_errors_with_their_diagnosis():
    text = render_verify_markdown(RECORDS, SUMMARY)
    assert "#### Failures (3)" in text
    failures = text.split("#### Failures (3)\n\n")[1].splitlines()
    assert failures[0] == (
        "| op | impl | shape | params | dtype | layout | input | check | status | max_abs_err | tolerance | "
        "message | diagnosis |"
    )
    assert failures[1] == "|" + "---|" * 13
    assert failures[2] == (
        "| gn | F.group_norm | 2x6x5x5 | G=3 | float32 | contiguous | normal | grad_input | fail | 0.0123 | "
        f"rtol=1.3e-06 atol=2.5e-05 (cond) | {RECORDS[1]['message']} | "
        f"**{BESSEL.cause}**: {BESSEL.evidence.replace('|', chr(92) + '|')} |"
    )
    assert failures[3].endswith(f"| cause unknown ({UNKNOWN.evidence}) |")
    assert len(failures) == 5  # the known defect is not a failure unless strict


def test_markdown_escapes_pipes_and_newlines_in_cells():
    text = render_verify_markdown(RECORDS, SUMMARY)
    [error_line] = [line for line in text.splitlines() if "| grad_weight |" in line]
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", error_line)[1:-1]]
    assert len(cells) == 13  # the pipe in the message is escaped, so it splits no cell
    assert cells[7:11] == ["grad_weight", "error", "", ""] and cells[12] == ""
    assert cells[11].startswith("returned ") and cells[11].endswith("bell")
    assert '"nan" \\| bad' in cells[11]
    assert markdown_table([{"a": "x|y\nz", "b": None, "c": True, "d": False}], ["a", "b", "c", "d"]) == (
        "| a | b | c | d |\n|---|---|---|---|\n| x\\|y z |  | yes |  |\n"
    )


def test_markdown_escapes_what_github_would_read_as_html():
    cell = markdown_table([{"m": "returned <class 'torch.Tensor'> & 2 > 1"}], ["m"]).splitlines()[2]
    assert cell == "| returned &lt;class 'torch.Tensor'> &amp; 2 > 1 |"


def test_markdown_strict_lists_the_known_defect_as_a_failure():
    text = render_verify_markdown(RECORDS, {**SUMMARY, "strict": True})
    assert "#### Failures (4)" in text
    assert (
        "| bn | BatchNormalization | 4x3x5 | eval | float16 | contiguous | large_mean | running_var | known |" in text
    )


def test_markdown_of_a_clean_run_passes_and_lists_no_failures():
    summary = {**summarize(RESULTS[:1]), "cases": 1, "seconds": 0.04}
    text = render_verify_markdown(RECORDS[:1], summary)
    assert text.splitlines()[0] == "### normcheck verify: passed"
    assert "1 pass, 0 fail, 0 known, 0 error, 0 skip (1 cases, 0.0 s)" in text
    assert "Failures" not in text


def test_markdown_lists_at_most_max_rows_failures():
    many = [RECORDS[1]] * (MAX_ROWS + 3)
    text = render_verify_markdown(many, {"fail": MAX_ROWS + 3})
    assert f"#### Failures ({MAX_ROWS + 3})" in text
    assert text.count("| grad_input | fail |") == MAX_ROWS
    assert text.endswith("\n... and 3 more; the JSON report has them all.\n")


def test_markdown_notes_translations():
    text = render_verify_markdown(RECORDS, {**SUMMARY, "translations": ["eps 1e-5 given to Keras as 1e-5"]})
    assert "- translated: eps 1e-5 given to Keras as 1e-5\n" in text


# -- the rich table --------------------------------------------------------------------------------


def _tables(group) -> list[Table]:
    return [r for r in group.renderables if isinstance(r, Table)]


def _column(table: Table, header: str) -> list[str]:
    [col] = [c for c in table.columns if c.header == header]
    return [str(cell) for cell in col.cells]


def test_table_summarizes_each_op_and_details_its_failures_and_errors():
    group = render_table(RECORDS)
    tables = _tables(group)
    assert [t.title for t in tables] == [
        "group norm (gn)",
        "group norm (gn): failures and errors",
        "batch norm (bn)",
        "batch norm (bn): failures and errors",
    ]
    gn_summary, gn_detail, bn_summary, bn_detail = tables
    assert _column(gn_summary, "impl") == ["F.group_norm", "F.group_norm vs jax:flax.linen.GroupNorm"]
    assert _column(gn_summary, "checks") == ["2", "1"]
    assert _column(gn_summary, "pass") == ["1", ""]
    assert _column(gn_summary, "fail") == ["1", "1"]
    assert _column(bn_summary, "known") == ["1"]
    assert _column(bn_summary, "error") == ["1"]
    assert _column(bn_summary, "skip") == ["1"]
    assert _column(gn_detail, "check") == ["grad_input", "forward"]
    assert _column(gn_detail, "status") == [FAIL, FAIL]
    assert _column(gn_detail, "max abs err") == ["0.0123", "inf"]
    assert _column(gn_detail, "worst index") == ["1,2,3,4", "0,0,0,0"]
    assert _column(gn_detail, "against") == ["", "jax:flax.linen.GroupNorm"]
    assert _column(gn_detail, "diagnosis") == [BESSEL.summary, UNKNOWN.summary]
    assert _column(bn_detail, "status") == [ERROR]
    assert _column(bn_detail, "message") == [HOSTILE]


def test_table_renders_to_text_with_the_rows_key_fields():
    text = _text(render_table(RECORDS))
    for field in ("group norm (gn)", "F.group_norm", "2x6x5x5", "G=3", "float32", "grad_input", "0.0123", "fail"):
        assert field in text, field
    assert "batch norm (bn): failures and errors" in text
    assert "1 checks match a known defect: one-pass variance in Keras" in text
    assert "rtol=1.3e-06 atol=2.5e-05 (cond)" in _text(render_table(RECORDS), width=1000)


def test_table_shows_passing_rows_only_with_show_all():
    assert "group norm (gn): all checks" not in _text(render_table(RECORDS[:1]))
    assert len(_tables(render_table(RECORDS[:1]))) == 1  # a clean op: the summary alone
    detail = _tables(render_table(RECORDS[:1], show_all=True))[1]
    assert detail.title == "group norm (gn): all checks"
    assert _column(detail, "status") == [PASS]
    assert _column(detail, "max abs err") == ["1.25e-07"]
    assert _column(detail, "mismatch %") == ["0"]
