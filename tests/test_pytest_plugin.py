"""normcheck's pytest plugin: a project's configured checks as pytest items.

Each test runs pytest in a subprocess on a copy of fixtures/pytest_project (two checks of a NumPy
layer norm, one correct and one with eps outside the square root; float32 and float16; inputs
normal and tiny_scale), with real worker processes as in normal use.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from normcheck.errors import UsageError
from normcheck.verify.config import load_config, pytest_opt_in
from normcheck.verify.records import CheckResult

pytest_plugins = ["pytester"]

PROJECT = Path(__file__).resolve().parents[1] / "fixtures" / "pytest_project"
CHECKS = [
    f"{check}-ln-{dtype}-{kind}"
    for check in ("my_ln", "buggy_ln")
    for dtype in ("float32", "float16")
    for kind in ("normal", "tiny_scale")
]
IDS = [f"pyproject.toml::test_normcheck[{c}]" for c in CHECKS]
# the bug hides on float16 normal input: the eps is lost against the variance in half precision
FAILING = {
    f"pyproject.toml::test_normcheck[buggy_ln-ln-{c}]"
    for c in ("float32-normal", "float32-tiny_scale", "float16-tiny_scale")
}
DIAGNOSIS = "eps added outside the square root"


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    """Real workers (the suite runs its own cases inline), and no trace of an outer xdist run."""
    monkeypatch.setenv("NORMCHECK_INLINE", "0")
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(PROJECT, pytester.path, dirs_exist_ok=True)
    return pytester


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if "::" in line]


def failed_ids(result: pytest.RunResult) -> set[str]:
    return {line.split()[1] for line in result.stdout.lines if line.startswith("FAILED ")}


def test_the_plugin_is_installed_as_an_entry_point():
    from importlib.metadata import entry_points

    assert [ep.value for ep in entry_points(group="pytest11") if ep.name == "normcheck"] == ["normcheck.pytest_plugin"]


def test_importing_the_plugin_imports_nothing_heavy():
    import subprocess

    code = (
        "import sys, pytest; before = set(sys.modules); import normcheck.pytest_plugin; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('tomllib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['normcheck', 'normcheck.pytest_plugin']"


def test_items_are_one_per_check_op_dtype_and_input_kind(project):
    result = project.runpytest_subprocess("--co", "-q")
    assert collected(result) == IDS
    selected = project.runpytest_subprocess("--co", "-q", "-k", "buggy_ln and float16")
    assert collected(selected) == [i for i in IDS if "buggy_ln-ln-float16" in i]
    project.makepyfile(test_own="def test_own():\n    pass\n")
    assert collected(project.runpytest_subprocess("--co", "-q", "-m", "not normcheck")) == ["test_own.py::test_own"]


def test_the_correct_implementation_passes_and_the_bug_fails_with_its_diagnosis(project):
    result = project.runpytest_subprocess("-rA", "--junitxml=report.xml")
    result.assert_outcomes(passed=5, failed=3)
    assert failed_ids(result) == FAILING
    out = result.stdout.str()
    # the failure says what assert_close would, then why: no traceback of normcheck's
    result.stdout.fnmatch_lines(
        [
            "*_ test_normcheck[[]buggy_ln-ln-float32-normal[]] _*",
            "normcheck: * of * checks failed for check 'buggy_ln' (layers.py:layernorm_forward_eps_outside_sqrt): "
            "ln, float32, input normal (*)",
            "layernorm_forward_eps_outside_sqrt [[]4x16, k=1, contiguous[]]",
            "  FAIL forward",
            "    Mismatched elements: * / 64 (*%)",
            "    Worst element at index (*): got *, expected * (difference *, allowed *)",
            "    Greatest absolute difference: *",
            "    Greatest relative difference: *",
            "    Tolerance: rtol=* atol=*",
            f"*Diagnosis: {DIAGNOSIS}*",
        ]
    )
    assert "Traceback" not in out and "normcheck/engine" not in out
    # a half-precision item names the formula cause only as confirmed by the float32 rows
    section = out.split("test_normcheck[buggy_ln-ln-float16-tiny_scale] _")[1]
    assert f"Diagnosis: {DIAGNOSIS}" in section
    # a passing item's report section counts its checks
    result.stdout.fnmatch_lines(["check 'my_ln' (layers.py:layernorm_forward): ln, float32, input normal: * passed"])

    suite = ET.parse(project.path / "report.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("8", "3", "0")
    cases = {f"{c.get('classname')}::{c.get('name')}": c for c in suite.iter("testcase")}
    assert sorted(cases) == sorted(IDS)
    for node_id, case in cases.items():
        failure = case.find("failure")
        assert (failure is not None) == (node_id in FAILING)
        if failure is not None:
            assert DIAGNOSIS in (failure.get("message") or "") and "Mismatched elements" in (failure.text or "")
        counts = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert counts["normcheck"].endswith("passed")  # e.g. "4 failed, 2 passed"

    # --lf reruns exactly the failed items
    again = project.runpytest_subprocess("--lf")
    again.assert_outcomes(failed=3)
    assert failed_ids(again) == FAILING


def test_k_runs_only_the_selected_items(project):
    result = project.runpytest_subprocess("-k", "buggy_ln and float16", "-rA")
    result.assert_outcomes(passed=1, failed=1, deselected=6)
    assert failed_ids(result) == {"pyproject.toml::test_normcheck[buggy_ln-ln-float16-tiny_scale]"}
    # the float32 rows that confirm the float16 diagnosis ran for it, though not selected
    assert f"Diagnosis: {DIAGNOSIS}" in result.stdout.str()


def test_x_stops_at_the_first_failing_item(project):
    result = project.runpytest_subprocess("-x")
    result.assert_outcomes(passed=4, failed=1)
    assert failed_ids(result) == {"pyproject.toml::test_normcheck[buggy_ln-ln-float32-normal]"}


def test_xdist_workers_run_their_own_items_with_the_same_outcomes(project):
    result = project.runpytest_subprocess("-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=5, failed=3)
    assert failed_ids(result) == FAILING
    assert DIAGNOSIS in result.stdout.str()


def test_off_unless_the_project_opts_in(project):
    (project.path / "pyproject.toml").write_text((PROJECT / "pyproject.toml").read_text().replace("pytest = true", ""))
    project.makepyfile(test_own="def test_own():\n    pass\n")
    # normcheck's modules stay unimported in a run that has not opted in
    project.makeconftest(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        "    print('NORMCHECK MODULES', sorted(m for m in sys.modules if m.startswith('normcheck.')))\n"
    )
    result = project.runpytest_subprocess("--co", "-q", "-s")
    assert collected(result) == ["test_own.py::test_own"]
    result.stdout.fnmatch_lines(["NORMCHECK MODULES ['normcheck.pytest_plugin']"])
    # --normcheck turns it on for one run; --no-normcheck turns off a config's opt-in
    assert collected(project.runpytest_subprocess("--co", "-q", "--normcheck")) == [*IDS, "test_own.py::test_own"]
    (project.path / "pyproject.toml").write_text((PROJECT / "pyproject.toml").read_text())
    assert collected(project.runpytest_subprocess("--co", "-q", "--no-normcheck")) == ["test_own.py::test_own"]


def test_paths_given_on_the_command_line_choose_what_is_collected(project):
    project.makepyfile(test_own="def test_own():\n    pass\n")
    assert collected(project.runpytest_subprocess("--co", "-q", "test_own.py")) == ["test_own.py::test_own"]
    only = project.runpytest_subprocess("--co", "-q", "pyproject.toml::test_normcheck[my_ln-ln-float16-normal]")
    assert collected(only) == ["pyproject.toml::test_normcheck[my_ln-ln-float16-normal]"]


def test_a_bad_config_is_one_clear_error(project):
    text = (PROJECT / "pyproject.toml").read_text()
    (project.path / "pyproject.toml").write_text(text.replace('dtypes = ["float32", "float16"]', "dtypes = 3"))
    result = project.runpytest_subprocess("--co")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting pyproject.toml*",
            "normcheck: bad config: *pyproject.toml: [[]tool.normcheck[]].dtypes: "
            "expected a string or a list of strings, got int 3",
            "*1 error*",
        ]
    )
    assert "Traceback" not in result.stdout.str()

    (project.path / "pyproject.toml").write_text(text.replace("pytest = true", 'pytest = "yes"'))
    refused = project.runpytest_subprocess("--co")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["ERROR: normcheck: *[[]tool.normcheck[]].pytest: expected true or false*"])


def test_a_check_that_ends_or_crashes_its_worker_fails_its_item(pytester):
    pytester.makepyprojecttoml(
        textwrap.dedent(
            """
            [tool.normcheck]
            pytest = true
            op = "ln"
            dtypes = "float32"
            inputs = "normal"
            shapes = [[2, 8]]
            backward = "hostile.py:layernorm_backward"
            style = "cs231n"

            [[tool.normcheck.check]]
            impl = "hostile.py:layernorm_forward_exits"

            [[tool.normcheck.check]]
            impl = "hostile.py:layernorm_forward_segfaults"

            [[tool.normcheck.check]]
            impl = "hostile.py:layernorm_forward_missing"
            """
        )
    )
    pytester.makepyfile(
        hostile="""
        import ctypes
        import sys

        def layernorm_forward_exits(x, gamma, beta, ln_param):
            sys.exit(0)

        def layernorm_forward_segfaults(x, gamma, beta, ln_param):
            ctypes.string_at(0)

        def layernorm_backward(dout, cache):
            raise AssertionError("not reached")
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*_ test_normcheck[[]layernorm_forward_exits-ln-float32-normal[]] _*",
            "*ERROR run: the code called sys.exit(0)*",
            "*_ test_normcheck[[]layernorm_forward_segfaults-ln-float32-normal[]] _*",
            "*ERROR run: the worker died: segmentation fault*",
            "*_ test_normcheck[[]layernorm_forward_missing-ln-float32-normal[]] _*",
            "*ERROR run: *has no attribute 'layernorm_forward_missing'*",
        ]
    )


def test_without_dtypes_the_items_of_dtypes_the_code_is_not_checked_in_are_skipped(pytester):
    pytester.makepyprojecttoml(
        textwrap.dedent(
            f"""
            [tool.normcheck]
            pytest = true
            inputs = "normal"
            shapes = [[2, 8]]

            [[tool.normcheck.check]]
            op = "ln"
            impl = "{PROJECT / "layers.py"}:layernorm_forward"
            backward = "{PROJECT / "layers.py"}:layernorm_backward"
            style = "cs231n"
            """
        )
    )
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=2, skipped=2)  # NumPy code: float32 and float64 by default
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] pyproject.toml:6: normcheck: no float16 case *; name the dtypes*"])


# -- what a failing item says, from hand-built records ----------------------------------


def _row(check: str, status: str = "fail", message: str = "", **parts) -> CheckResult:
    from normcheck.ops import OpParams
    from normcheck.verify.records import Case, CheckResult

    case = Case("ln", "user", "my_ln", (2, 3), OpParams(normalized_ndim=1), "float32", "normal")
    return CheckResult(case, check, status, message=message, **parts)  # type: ignore[arg-type]


def test_a_failure_reads_like_assert_close_then_names_the_cause():
    from normcheck.pytest_plugin.failure import failure_text
    from normcheck.verify.records import Comparison, Diagnosis, Tolerance

    cause = Diagnosis("eps_outside_sqrt", "eps added outside the square root", "forward: 0.1 -> 1e-8", fix="move it")
    rows = [
        _row(
            "forward",
            comparison=Comparison(0.25, 0.5, 4, 6, (1, 2), worst_got=0.75, worst_expected=0.5),
            tolerance=Tolerance(1.3e-6, 1e-5, 1e-5, 0.0, "dtype"),
            message="4/6 elements (66.7%) beyond tolerance; worst at [1, 2]: got 0.75, expected 0.5",
            diagnosis=cause,
        ),
        _row("grad_input", "pass"),
        _row("run", "error", message="the worker died: segmentation fault (SIGSEGV)"),
    ]
    text = failure_text("check 'mine': ln, float32, input normal", rows, ("fail", "error"), "pyproject.toml")
    assert text.splitlines()[0] == (
        "normcheck: 2 of 3 checks failed for check 'mine': ln, float32, input normal (1 failed, 1 error, 1 passed)"
    )
    for line in (
        "my_ln [2x3, k=1, contiguous]",
        "  FAIL forward",
        "    Mismatched elements: 4 / 6 (66.7%)",
        "    Worst element at index (1, 2): got 0.75, expected 0.5 (difference 0.25, allowed 1.07e-05)",
        "    Greatest absolute difference: 0.25",
        "    Greatest relative difference: 0.5",
        "    Tolerance: rtol=1.3e-06 atol=1.0e-05",
        "  ERROR run: the worker died: segmentation fault (SIGSEGV)",
        "    Diagnosis: eps added outside the square root",
        "      evidence: forward: 0.1 -> 1e-8",
        "    Fix: move it",
        "Every row of the config's checks: normcheck verify --config pyproject.toml",
    ):
        assert line in text.splitlines(), line


def test_a_message_of_another_shape_is_shown_as_it_is():
    from normcheck.pytest_plugin.failure import row_lines
    from normcheck.verify.records import Comparison, Tolerance

    row = _row(
        "forward",
        comparison=Comparison(1.0, 1.0, 1, 1, (0,)),
        tolerance=Tolerance(0.0, 0.0, 0.0, 0.0, "user"),
        message="something else entirely",
    )
    assert "    something else entirely" in row_lines(row)


def test_ids_are_readable_unique_and_in_config_order(tmp_path):
    from normcheck.pytest_plugin.collect import _check_lines, _unique, slug_of
    from normcheck.verify.request import Request

    assert slug_of(Request(name="our group norm!", ops="gn"), 1) == "our_group_norm"
    assert slug_of(Request(name="check 2", impl="pkg/layers.py:MyGroupNorm"), 2) == "MyGroupNorm"
    assert slug_of(Request(name="check 3", ops="gn", frameworks=["torch", "jax"]), 3) == "torch+jax"
    taken: set[str] = set()
    assert [_unique(s, taken) for s in ("a", "a", "a_2", "b", "a")] == ["a", "a_2", "a_2_2", "b", "a_3"]
    path = write(tmp_path, 'pytest = true\n\n[[check]]\nop = "gn"\n\n  [[ check ]]\nop = "ln"\n')
    assert _check_lines(path) == [2, 5]


# -- the config key ---------------------------------------------------------------------


def write(tmp_path: Path, body: str, name: str = "normcheck.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_the_pytest_key_opts_in_and_verify_ignores_it(tmp_path):
    path = write(tmp_path, 'pytest = true\n[[check]]\nop = "gn"\n')
    assert pytest_opt_in(path) is True
    assert [r.ops for r in load_config(path)] == ["gn"]
    assert pytest_opt_in(write(tmp_path, '[[check]]\nop = "gn"\n')) is False
    body = '[tool.normcheck]\npytest = false\n[[tool.normcheck.check]]\nop = "gn"\n'
    pyproject = write(tmp_path, body, "pyproject.toml")
    assert pytest_opt_in(pyproject) is False


@pytest.mark.parametrize("value", ['"yes"', "1", "[true]"])
def test_a_pytest_key_that_is_not_a_boolean_is_refused(tmp_path, value):
    path = write(tmp_path, f'pytest = {value}\n[[check]]\nop = "gn"\n')
    for load in (pytest_opt_in, load_config):
        with pytest.raises(UsageError, match=r"normcheck\.toml: pytest: expected true or false .*, got "):
            load(path)


def test_the_pytest_key_belongs_to_the_file_not_to_a_check(tmp_path):
    path = write(tmp_path, '[[check]]\nop = "gn"\npytest = true\n')
    with pytest.raises(UsageError, match=r"\[check\]\[1\]\.pytest: a top-level key"):
        load_config(path)
