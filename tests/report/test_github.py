"""--format github on hand-built records: GitHub's workflow-command syntax and escaping, grouping,
--strict, and the job summary appended to $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from normcheck.report.github import (
    Annotation,
    append_step_summary,
    default_format,
    escape_data,
    escape_property,
    github_output,
    render_github,
    verify_annotations,
)

# ::kind key=value,key=value::message  (GitHub's "Workflow commands for GitHub Actions")
COMMAND = re.compile(r"^::(error|warning|notice)(?: ((?:[a-zA-Z]+=[^,:]*)(?:,[a-zA-Z]+=[^,:]*)*))?::(.*)$")


def parse(line: str) -> tuple[str, dict[str, str], str]:
    """A workflow command back into (kind, properties, message), unescaped as the runner does."""
    m = COMMAND.match(line)
    assert m, f"not a workflow command: {line!r}"
    props = {}
    for pair in (m.group(2) or "").split(",") if m.group(2) else []:
        key, _, value = pair.partition("=")
        props[key] = _unescape(value)
    return m.group(1), props, _unescape(m.group(3))


def _unescape(text: str) -> str:
    for code, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(code, char)
    return text


def row(**changes) -> dict:
    base = {
        "op": "gn",
        "framework": "user",
        "impl": "my_group_norm",
        "device": "cpu",
        "shape": "2x6x4x4",
        "params": "G=3",
        "dtype": "float32",
        "layout": "contiguous",
        "input": "normal",
        "check": "forward",
        "against": None,
        "status": "fail",
        "max_abs_err": 1.05,
        "max_rel_err": 0.5,
        "mismatched_pct": 100.0,
        "worst_index": [0, 1, 1, 1],
        "tolerance": "rtol=1.3e-06 atol=1.4e-05 (cond)",
        "rtol": 1.3e-6,
        "atol": 1.4e-5,
        "message": "192/192 elements (100%) beyond tolerance; worst at [0, 1, 1, 1]: got 3.529937, expected 2.478402",
        "diagnosis": {
            "hypothesis": "groups_interleaved",
            "cause": "channels grouped in the wrong order: channel c in group c % G",
            "evidence": "grad_weight: max abs err 2.7 -> 2.6e-06",
            "scope": "case",
            "also": [],
            "fix": "reshape to (N, G, C // G, ...)",
            "family": "formula",
            "ambiguous": False,
            "summary": "channels grouped in the wrong order: channel c in group c % G (grad_weight: max abs err "
            "2.7 -> 2.6e-06); fix: reshape to (N, G, C // G, ...)",
        },
    }
    return {**base, **changes}


def builtin(**changes) -> dict:
    return row(**{"framework": "torch", "impl": "F.group_norm", "diagnosis": None, **changes})


def summary(records, strict=False, **extra) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in ("pass", "fail", "known", "error", "skip")}
    return {**counts, "cases": 4, "seconds": 1.0, "translations": [], "strict": strict, **extra}


def lines_of(text: str) -> list[str]:
    assert text.endswith("\n")
    return text.splitlines()


@pytest.fixture
def impl_file(tmp_path):
    """A user file with the implementation on line 5 (after a decorator on line 4)."""
    path = tmp_path / "pkg" / "layers.py"
    path.parent.mkdir()
    path.write_text("import functools\n\n\n@functools.cache\ndef my_group_norm(x):\n    return x\n")
    return path


# ------------------------------------------------------------------------------------ escaping


def test_message_data_escape_percent_cr_and_lf_only():
    assert escape_data("100% a:b,c\r\nnext") == "100%25 a:b,c%0D%0Anext"


def test_property_values_also_escape_colon_and_comma():
    assert escape_property("a:b,c 5%\n") == "a%3Ab%2Cc 5%25%0A"


def test_percent_is_escaped_first_so_existing_escapes_stay_literal():
    assert escape_data("%0A") == "%250A"
    assert _unescape(escape_data("%0A")) == "%0A"


def test_the_documented_syntax_with_file_line_and_title():
    note = Annotation("error", "t: x, y", "got 1, expected 2: 50%\nnext", file="src/a,b.py", line=7)
    assert note.command() == "::error file=src/a%2Cb.py,line=7,title=t%3A x%2C y::got 1, expected 2: 50%25%0Anext"


def test_without_file_there_is_no_line_and_the_syntax_stays_valid():
    assert Annotation("notice", "", "m", line=3).command() == "::notice::m"
    assert Annotation("error", "T", "m").command() == "::error title=T::m"


def test_a_newline_in_a_message_cannot_start_another_command():
    text = render_github([row(status="error", check="run", message="boom\n::set-env name=X::1")], summary([]))
    assert all(line.startswith("::error ") or line.startswith("normcheck verify") for line in lines_of(text))
    assert "%0A::set-env" in text


# ------------------------------------------------------------------------------- where it points


def test_a_path_impl_points_at_its_def_line_relative_to_the_workspace(impl_file, tmp_path):
    text = render_github([row()], summary([row()]), [f"{impl_file}:my_group_norm"], workspace=str(tmp_path))
    kind, props, _ = parse(lines_of(text)[0])
    assert kind == "error"
    assert props["file"] == "pkg/layers.py" and props["line"] == "5"
    assert "channels grouped in the wrong order" in props["title"] and "my_group_norm" in props["title"]


def test_outside_the_workspace_the_path_is_relative_to_the_current_directory(impl_file, tmp_path):
    spec = "pkg/layers.py:my_group_norm"
    text = render_github([row()], summary([row()]), [spec], workspace="/elsewhere", cwd=tmp_path)
    assert parse(lines_of(text)[0])[1]["file"] == "pkg/layers.py"


def test_a_builtin_row_has_no_file_or_line():
    text = render_github([builtin()], summary([builtin()]))
    kind, props, _ = parse(lines_of(text)[0])
    assert kind == "error" and "file" not in props and "line" not in props
    assert props["title"].startswith("normcheck: gn torch F.group_norm: forward fails")


def test_an_impl_whose_file_is_gone_is_annotated_without_a_location(tmp_path):
    text = render_github([row()], summary([row()]), [f"{tmp_path}/missing.py:f"], workspace=str(tmp_path))
    _, props, _ = parse(lines_of(text)[0])
    assert "file" not in props


# -------------------------------------------------------------------------------------- grouping


def test_500_failing_checks_of_one_cause_are_one_annotation_with_counts_and_the_worst_numbers():
    records = [
        row(check=check, dtype=dtype, shape=f"2x{c}x4x4", max_abs_err=0.1 + i / 1000)
        for i, (check, dtype, c) in enumerate(
            (ch, dt, c) for ch in ("forward", "grad_input") for dt in ("float32", "float64") for c in range(125)
        )
    ]
    records[321]["max_abs_err"] = 9.5
    records[321]["message"] = "worst one: got 12.5, expected 3"
    text = render_github(records, summary(records))
    lines = lines_of(text)
    assert len(lines) == 2  # one annotation and the summary line
    message = parse(lines[0])[2]
    assert message.startswith("500 failing checks (forward x250, grad_input x250) in 250 cases")
    assert "max abs err 9.5" in message and "got 12.5, expected 3" in message
    assert "tolerance rtol=1.3e-06 atol=1.4e-05 (cond)" in message
    assert "Diagnosis: channels grouped in the wrong order" in message and "fix: reshape" in message
    assert "(+" in message  # 250 shapes: a few named, then a count
    assert (
        lines[1].startswith("normcheck verify FAILED: 0 passed, 500 failed")
        and "1 annotation for 500 checks" in lines[1]
    )


def test_one_annotation_per_implementation_op_and_cause():
    unknown = {"hypothesis": None, "cause": "unknown", "evidence": "none fits", "summary": "cause unknown (none fits)"}
    records = [
        row(),
        row(check="grad_input"),
        row(impl="my_group_norm (defaults)"),
        row(op="ln", impl="my_layer_norm", check="grad_input", diagnosis=unknown),
        row(op="ln", impl="my_layer_norm", check="grad_weight", diagnosis=unknown),
        builtin(),
        row(status="pass"),
        row(status="skip"),
    ]
    notes = verify_annotations(records, strict=False)
    assert [(n.title, n.checks) for n in notes] == [
        ("normcheck: gn my_group_norm: channels grouped in the wrong order: channel c in group c % G", 2),
        ("normcheck: gn my_group_norm (defaults): channels grouped in the wrong order: channel c in group c % G", 1),
        ("normcheck: ln my_layer_norm: grad_input fails (cause unknown)", 1),
        ("normcheck: ln my_layer_norm: grad_weight fails (cause unknown)", 1),
        ("normcheck: gn torch F.group_norm: forward fails (cause unknown)", 1),
    ]


def test_rows_compared_with_another_framework_are_their_own_group():
    notes = verify_annotations([builtin(), builtin(against="tensorflow:keras.layers.GroupNormalization")], strict=False)
    assert [n.title for n in notes] == [
        "normcheck: gn torch F.group_norm: forward fails (cause unknown)",
        "normcheck: gn torch F.group_norm vs tensorflow:keras.layers.GroupNormalization: forward fails (cause unknown)",
    ]
    assert "compared with tensorflow:keras.layers.GroupNormalization" in notes[1].message


def test_errors_come_first_with_their_distinct_messages():
    records = [
        row(),
        *(
            row(status="error", check="run", message=f"timed out after 60 s on case {i}", diagnosis=None)
            for i in range(5)
        ),
    ]
    notes = verify_annotations(records, strict=False)
    assert notes[0].title == "normcheck: gn my_group_norm: error" and notes[0].checks == 5
    assert notes[0].message.count("Error: timed out") == 3 and "2 other error messages" in notes[0].message


def test_past_the_limit_the_last_annotation_lists_the_other_groups():
    records = [row(op="gn", impl=f"impl_{i}", diagnosis=None) for i in range(14)]
    notes = verify_annotations(records, strict=False, limit=10)
    assert len(notes) == 10
    assert notes[-1].title == "normcheck: 5 more groups of 5 checks" and notes[-1].checks == 5
    assert "- gn impl_13: forward fails (cause unknown) (1 check)" in notes[-1].message
    assert sum(n.checks for n in notes) == 14


def test_limits_apply_per_kind():
    records = [row(impl=f"impl_{i}", diagnosis=None) for i in range(10)]
    records += [builtin(status="known", impl=f"k{i}", message=f"known defect: cause {i}. got 1") for i in range(10)]
    notes = verify_annotations(records, strict=False, limit=10)
    assert [n.kind for n in notes] == ["error"] * 10 + ["notice"] * 10


# ------------------------------------------------------------------------------- known and strict

KNOWN = "known defect: PyTorch's CPU group norm on channels-last input computes the variance in one pass, E[x^2]"


def test_known_defects_are_notices_without_strict_and_errors_with_it():
    records = [
        builtin(status="known", layout="channels_last", message=f"{KNOWN}. 3/192 elements (1.6%) beyond tolerance")
    ]
    kind, props, message = parse(lines_of(render_github(records, summary(records)))[0])
    assert kind == "notice"
    assert props["title"].startswith("normcheck: gn torch F.group_norm: known defect: PyTorch's CPU group norm")
    assert message.startswith("1 known-defect check (forward x1)")
    assert "Known defect: PyTorch's CPU group norm" in message and "3/192 elements (1.6%) beyond" in message
    last = lines_of(render_github(records, summary(records)))[-1]
    assert last.startswith("normcheck verify passed")

    strict = render_github(records, summary(records, strict=True))
    kind, _, message = parse(lines_of(strict)[0])
    assert kind == "error" and "--strict" in message
    assert lines_of(strict)[-1].startswith("normcheck verify FAILED")


def test_a_long_cause_is_cut_in_the_title_and_whole_in_the_message():
    cause = "known defect: " + "x" * 300
    records = [builtin(status="known", message=f"{cause}. got 1")]
    _, props, message = parse(lines_of(render_github(records, summary(records)))[0])
    assert props["title"].endswith("...") and len(props["title"]) < 160
    assert "x" * 300 in message


def test_a_passing_run_prints_only_the_summary_line():
    records = [row(status="pass", diagnosis=None)] * 3
    assert lines_of(render_github(records, summary(records))) == [
        "normcheck verify passed: 3 passed, 0 failed, 0 errors, 0 known defects, 0 skipped (4 cases); "
        "0 annotations for 0 checks"
    ]


def test_an_interrupted_run_says_so():
    line = lines_of(render_github([], summary([], interrupted=True)))[-1]
    assert line.startswith("normcheck verify interrupted:")


# ---------------------------------------------------------------------------- choosing the format


def test_github_is_the_default_under_github_actions_when_the_report_goes_to_stdout():
    assert default_format(True, {"GITHUB_ACTIONS": "true"}) == "github"
    assert default_format(False, {"GITHUB_ACTIONS": "true"}) == "table"  # --output FILE keeps the default
    assert default_format(True, {}) == "table"
    assert default_format(True, {"GITHUB_ACTIONS": "false"}) == "table"


def test_under_github_actions_a_report_in_a_file_adds_annotations_and_the_job_summary():
    actions = {"GITHUB_ACTIONS": "true"}
    assert github_output("json", to_stdout=False, env=actions) == (True, True)
    assert github_output("json", to_stdout=True, env=actions) == (False, False)
    assert github_output("json", to_stdout=False, env={}) == (False, False)
    assert github_output("github", to_stdout=True, env={}) == (False, True)


# ----------------------------------------------------------------------------------- job summary


def test_the_job_summary_is_appended_not_overwritten(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("## an earlier step\n")
    assert append_step_summary("### normcheck verify: FAILED", {"GITHUB_STEP_SUMMARY": str(path)}) is None
    assert append_step_summary("second", {"GITHUB_STEP_SUMMARY": str(path)}) is None
    assert path.read_text() == "## an earlier step\n### normcheck verify: FAILED\nsecond\n"


def test_no_step_summary_variable_writes_nothing(tmp_path):
    assert append_step_summary("x", {}) is None
    assert append_step_summary("x", {"GITHUB_STEP_SUMMARY": ""}) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes any file")
def test_an_unwritable_step_summary_is_a_problem_in_words(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("")
    path.chmod(0o444)
    problem = append_step_summary("x", {"GITHUB_STEP_SUMMARY": str(path)})
    assert problem and problem.startswith(f"cannot append the job summary to {path}")


def test_a_missing_folder_or_a_directory_is_a_problem_in_words(tmp_path):
    missing = tmp_path / "no" / "summary.md"
    problem = append_step_summary("x", {"GITHUB_STEP_SUMMARY": str(missing)})
    assert problem == f"cannot append the job summary to {missing}: No such file or directory"
    (tmp_path / "file").write_text("")
    inside_a_file = tmp_path / "file" / "summary.md"  # unwritable even for root
    problem = append_step_summary("x", {"GITHUB_STEP_SUMMARY": str(inside_a_file)})
    assert problem == f"cannot append the job summary to {inside_a_file}: Not a directory"
    problem = append_step_summary("x", {"GITHUB_STEP_SUMMARY": str(tmp_path)})
    assert problem == f"cannot append the job summary to {tmp_path}: not a regular file"
    assert not Path(missing).exists()


# ----------------------------------------------------------------------------------------- bench


def bench_result(median: float, impl: str = "F.group_norm", framework: str = "torch", status: str = "ok", **kw):
    from normcheck.bench.records import BenchCase, BenchResult

    c = BenchCase("gn", (2, 64, 8, 8), "G=32", "float32", framework, impl, "cpu", "forward", "eager")
    samples = tuple(median * (1 + 0.01 * k) for k in (-2, -1, 0, 1, 2))
    return BenchResult(c, status=status, samples=samples if status == "ok" else (), **kw)


def test_bench_regressions_and_error_rows_are_errors_and_oom_a_warning(impl_file, tmp_path):
    from normcheck.bench.compare import compare
    from normcheck.bench.records import BenchReport
    from normcheck.report.github import render_bench_github

    old = [bench_result(1.0), bench_result(1.0, impl="nn.GroupNorm")]
    new = [
        bench_result(1.5),
        bench_result(1.0, impl="nn.GroupNorm"),
        bench_result(0, impl="my_group_norm", framework="user", status="error", reason="ValueError: boom"),
        bench_result(0, impl="my_group_norm", framework="user", status="oom", reason="out of memory"),
    ]
    comparison = compare(old, new, 0.10, {"cpu": "a"}, {"cpu": "b"})
    text = render_bench_github(
        BenchReport({}, {}, new), comparison, f"{impl_file}:my_group_norm", workspace=str(tmp_path)
    )
    lines = lines_of(text)
    notes = [parse(line) for line in lines[:-1]]
    kinds = [(kind, props.get("title"), props.get("file"), props.get("line")) for kind, props, _ in notes]
    assert kinds[0] == ("error", "normcheck bench: gn my_group_norm: error", "pkg/layers.py", "5")
    assert kinds[1] == ("error", "normcheck bench: gn torch F.group_norm: slower", None, None)
    assert kinds[2] == ("warning", "normcheck bench: gn my_group_norm: out of memory", "pkg/layers.py", "5")
    assert kinds[3][:2] == ("warning", "normcheck bench: the compared runs differ")
    assert "ValueError: boom" in notes[0][2] and "(1.50x)" in notes[1][2]
    assert lines[-1].startswith("normcheck bench FAILED: 2 measured, 0 skipped, 1 errors, 1 out of memory, 1 slower")


def test_a_bench_run_without_problems_prints_only_its_summary_line():
    from normcheck.bench.records import BenchReport
    from normcheck.report.github import render_bench_github

    text = render_bench_github(BenchReport({}, {}, [bench_result(1.0)]))
    assert lines_of(text) == ["normcheck bench ran: 1 measured, 0 skipped, 0 errors, 0 out of memory; 0 annotations"]
