"""A reproducer's verdict: the tolerance rule normcheck applies, in a script that needs only NumPy
(a snippet standing in for a framework returns the expected output with a chosen error)."""

from __future__ import annotations

import numpy as np
import pytest
from _scripts import assert_standalone, run_script

from normcheck.ops import OpParams
from normcheck.repro.call import Snippet
from normcheck.repro.script import Description, render
from normcheck.verify.records import FAIL, Case, CheckResult, Comparison, Diagnosis, Tolerance

CASE = Case("ln", "numpy", "shifted", (2, 4), OpParams(normalized_ndim=1), "float32", "normal")
ROW = CheckResult(
    CASE,
    "forward",
    FAIL,
    Comparison(2e-3, 1e-3, 8, 8, (0, 0)),
    Tolerance(rtol=1e-6, atol=1e-3, floor_atol=1e-5, witness_err=1.2e-4, source="dtype"),
    message="8/8 elements beyond tolerance",
    diagnosis=Diagnosis("eps_value", 'eps has the wrong value """', "error 2e-3 -> 0"),
)
# the snippet adds ERROR to the expected output (read from the .npz)
SHIFTED = Snippet((), 'def run(data):\n    return {"forward": data["expected"] + float(data["error"])}\n', "'none'", ())


def write(tmp_path, error: float, expected=None):
    stem = "numpy_shifted_ln_forward_eps_value"
    text = render(Description(ROW, 3, "eps has the wrong value", "normcheck verify --op ln", (), ("x",)), stem, SHIFTED)
    script = tmp_path / f"{stem}.py"
    script.write_text(text)
    want = np.linspace(-1.0, 1.0, 8).reshape(2, 4) if expected is None else expected
    np.savez(script.with_suffix(".npz"), x=want, expected=want, rtol=1e-6, atol=1e-3, witness_err=1.2e-4, error=error)
    return script


@pytest.mark.parametrize(
    ("error", "code", "verdict"),
    [(2e-3, 1, "reproduced"), (5e-4, 0, "not reproduced"), (float("nan"), 1, "reproduced")],
)
def test_a_script_exits_1_beyond_the_tolerance_and_0_within(tmp_path, error, code, verdict):
    script = write(tmp_path, error)
    assert_standalone(script)
    done = run_script(script, tmp_path)
    assert done.code == code, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("shifted (numpy): layer norm forward, float32 2x4 k=1 contiguous normal input, cpu")
    assert lines[1].startswith("observed max abs error " + ("inf" if error != error else f"{error:.3g}"))
    assert lines[2] == (
        "expected error at most 0.001 + 1e-06 * |expected|: a correct float32 implementation errs by at most "
        "0.00012 here"
    )
    assert lines[3].startswith(verdict + ":")


def test_the_relative_part_of_the_tolerance_counts(tmp_path):
    # 2e-3 off on values of 1e4: within 1e-3 + 1e-6 * 1e4
    script = write(tmp_path, 2e-3, expected=np.full((2, 4), 1e4))
    assert run_script(script, tmp_path).code == 0


def test_the_docstring_names_the_row_its_cause_and_the_command(tmp_path):
    text = write(tmp_path, 0.0).read_text()
    doc = text.split('"""')[1]
    assert "Reproduces a failure found by normcheck: shifted (numpy): layer norm forward" in doc
    assert "(3 rows of the run fail the same way" in " ".join(doc.split())
    assert "Cause: eps has the wrong value." in doc
    assert "Produced by: normcheck verify --op ln" in doc
    compile(text, "script", "exec")  # the triple quotes of the diagnosis are escaped
