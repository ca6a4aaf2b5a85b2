"""Running reproducers as their reader would: a fresh interpreter in isolated mode (no
PYTHONPATH, no user site, no current folder on the path), started in an unrelated folder, with
normcheck made unimportable so a script that needs it fails. Several scripts may share the
interpreter (the framework is imported once): each runs as __main__ with its own globals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# normcheck may be installed in site-packages: block it by name before any script runs
RUNNER = """\
import contextlib, io, json, runpy, sys, traceback
sys.modules["normcheck"] = None
results = []
for path in sys.argv[1:]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            sys.argv = [path]
            runpy.run_path(path, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException:
            code, _ = "crashed", print(traceback.format_exc())
    results.append([code, out.getvalue()])
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Ran:
    code: int | str  # the exit status, or "crashed"
    stdout: str


def run_scripts(scripts: list[Path], cwd: Path) -> list[Ran]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", RUNNER, *map(str, scripts)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [Ran(code, stdout) for code, stdout in json.loads(done.stdout.splitlines()[-1])]


def run_script(script: Path, cwd: Path) -> Ran:
    return run_scripts([script], cwd)[0]


def assert_standalone(script: Path) -> None:
    text = script.read_text()
    assert "import normcheck" not in text and "from normcheck" not in text
    assert script.with_suffix(".npz").is_file()
