"""A NumPy stand-in framework for CLI tests: correct, buggy or raising on demand."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck import frameworks
from normcheck.frameworks import CONVENTIONS, FrameworkInfo
from normcheck.frameworks.base import Framework, Implementation, RunOutput
from normcheck.reference import reference


class NumpyImplementation(Implementation):
    def __init__(self, op: str, bug: str | None, framework: str = "numpy") -> None:
        self.op, self.bug, self.framework = op, bug, framework
        self.name = f"np.{op}" + (f"[{bug}]" if bug else "")

    def run(self, problem, layout, device) -> RunOutput:
        if self.bug == "raises":
            raise ValueError("boom: shapes do not line up")
        out = RunOutput()
        for check, value in reference(problem, np.float64).items():
            if self.bug == "scaled" and check == "forward":
                value = value * 1.01
            out.add(check, value, problem.dtype)
        return out


class NumpyFramework(Framework):
    dtypes = ("float64", "float32")

    def __init__(self, bug: str | None = None, name: str = "numpy", conventions_of: str = "torch") -> None:
        self.bug, self.name, self.conventions = bug, name, CONVENTIONS[conventions_of]

    def implementations(self, op):
        return [NumpyImplementation(op, self.bug, self.name)]


# "numpy" follows PyTorch's conventions; "numpy_keras" follows Keras's, and is always correct
STAND_INS = {"numpy": "torch", "numpy_keras": "tensorflow"}


@pytest.fixture
def numpy_framework(monkeypatch):
    """Install the stand-ins as the only frameworks (--framework numpy by default, the only one
    installed); returns a setter for the bug of "numpy"."""
    state = {"bug": None}
    monkeypatch.setenv("NORMCHECK_INLINE", "1")  # the stand-ins live in this process only
    for name in STAND_INS:
        info = FrameworkInfo(name, extra=name, probe=("numpy",), adapter="-", forms_module=None, bench="-", facts="-")
        monkeypatch.setitem(frameworks.FRAMEWORKS, name, info)
    monkeypatch.setattr(frameworks, "installed", lambda: ["numpy"])
    monkeypatch.setattr(frameworks, "is_installed", lambda name: name in STAND_INS)
    monkeypatch.setattr(
        frameworks,
        "load",
        lambda name: NumpyFramework(state["bug"] if name == "numpy" else None, name, STAND_INS[name]),
    )

    def set_bug(bug: str | None) -> None:
        state["bug"] = bug

    return set_bug
