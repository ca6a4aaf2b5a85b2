"""Running a framework's reproducer snippet in this process and comparing its outputs with what
the adapter (or the user form) produces on the same case: they must agree bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from normcheck import frameworks as registry
from normcheck.frameworks.base import Framework, Implementation, Unsupported
from normcheck.ops import OPS
from normcheck.problem import Problem
from normcheck.repro.call import ReproCall, Snippet, UserCode
from normcheck.repro.inputs import case_arrays
from normcheck.repro.user_code import Loader
from normcheck.verify.plan import settled_problem

# Cases with each kind of setting: running statistics in train and eval mode, 2-D to 5-D, groups,
# several normalized dims, no affine
CASES = {
    "bn": [((8, 5), "train"), ((2, 3, 5, 5), "eval"), ((2, 3, 2, 3, 4), "train")],
    "ln": [((2, 3, 7, 9), "k=2"), ((4, 16), "k=1")],
    "in": [((2, 4, 6, 6), "no-affine"), ((3, 4, 5, 5), "eval"), ((1, 4, 5, 5), "-")],
    "gn": [((2, 6, 5, 5), "G=3"), ((5, 4), "G=2")],
    "rms": [((2, 3, 8, 8), "k=2"), ((2, 6, 32), "k=1 no-affine")],
}


def cases(op: str):
    """The op's default cases with the (shape, label) pairs of CASES."""
    return [(s, p) for s, p in OPS[op].default_cases() if (s, p.label()) in CASES[op]]


def source(snippet: Snippet, load: Loader | None = None) -> str:
    parts = ["import sys", "from pathlib import Path", "import numpy as np", *(load[0] if load else ())]
    parts += [*snippet.imports, load[1] if load else "", snippet.code]
    return "\n".join(parts)


def run_snippet(snippet: Snippet, arrays: dict, script: Path, load: Loader | None = None) -> dict:
    """``run(arrays)`` of the snippet, executed as if it were the script at ``script``."""
    namespace = {"__file__": str(script), "__name__": "reproducer"}
    exec(compile(source(snippet, load), str(script), "exec"), namespace)
    return namespace["run"](arrays)


def problem_and_call(
    fw: Framework, impl: Implementation, op, shape, params, dtype, layout, user: UserCode | None = None
) -> tuple[Problem, ReproCall]:
    params = fw.case_params(op, params)
    s = fw.settings(op, dtype)
    problem = settled_problem(op, shape, params, dtype, "normal", s, seed=0)
    call = ReproCall(impl.name, op, shape, params, dtype, layout, "cpu", s.eps, s.momentum, s.framework_momentum, user)
    return problem, call


def assert_mirrors(
    name: str, fw: Framework, impl: Implementation, problem: Problem, call: ReproCall, script: Path, load=None
) -> bool:
    """The snippet's outputs equal the implementation's; False when the case is unsupported."""
    if impl.unsupported(problem, call.layout):
        return False
    try:
        want = impl.run(problem, call.layout, "cpu").values
    except Unsupported:
        return False
    snippet = registry.repro_module(name).snippet(call)
    assert isinstance(snippet, Snippet), snippet
    got = run_snippet(snippet, case_arrays(problem), script, load)
    assert set(want) <= set(got), (call, set(want) - set(got))
    for check, value in want.items():
        np.testing.assert_array_equal(got[check], value, err_msg=f"{check} of {call}")
    return True
