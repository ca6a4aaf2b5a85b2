"""A NumPy stand-in framework for CLI tests: correct, buggy or raising on demand."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck import frameworks
from normcheck.frameworks import FrameworkInfo
from normcheck.frameworks.base import Framework, Implementation, RunOutput
from normcheck.ops import reference


class NumpyImplementation(Implementation):
    framework = "numpy"

    def __init__(self, op: str, bug: str | None) -> None:
        self.op, self.bug, self.name = op, bug, f"np.{op}" + (f"[{bug}]" if bug else "")

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
    name = "numpy"
    conventions_of = "torch"
    dtypes = ("float64", "float32")

    def __init__(self, bug: str | None = None) -> None:
        self.bug = bug

    def implementations(self, op):
        return [NumpyImplementation(op, self.bug)]


@pytest.fixture
def numpy_framework(monkeypatch):
    """Install the stand-in as the only framework; returns a setter for its bug."""
    state = {"bug": None}
    monkeypatch.setitem(frameworks.FRAMEWORKS, "numpy", FrameworkInfo("numpy", "-", ("numpy",), "numpy"))
    monkeypatch.setattr(frameworks, "installed", lambda: ["numpy"])
    monkeypatch.setattr(frameworks, "load", lambda name: NumpyFramework(state["bug"]))

    def set_bug(bug: str | None) -> None:
        state["bug"] = bug

    return set_bug
