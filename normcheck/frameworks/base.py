"""What an adapter provides: a framework's conventions and its implementations of each op."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from normcheck.conventions import CONVENTIONS, Convention, Settings, settings
from normcheck.ops import OpParams
from normcheck.problem import Problem
from normcheck.verify.records import Case


class Unsupported(Exception):
    """The implementation cannot run this case at all (a dtype or device it lacks)."""


@dataclass
class RunOutput:
    """What an implementation produced: float64 copies of each checked tensor and their dtypes."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)

    def add(self, check: str, value: np.ndarray, dtype: str) -> None:
        self.values[check] = np.asarray(value, dtype=np.float64)
        self.dtypes[check] = dtype


class Implementation(ABC):
    """One way a framework computes an op (a function, a layer class, ...)."""

    framework: str
    op: str
    name: str

    def layouts(self, shape: tuple[int, ...]) -> tuple[str, ...]:
        """Layouts the case runs in: "contiguous" is the canonical channels-first layout,
        "channels_last" has the channels on the last axis."""
        return ("contiguous",)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        """Why this implementation cannot express the case at all (shown as a skip), or None."""
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        """Checks this implementation does not produce by design, each with the reason
        (an inference-only runtime has no gradients). They are reported as skipped."""
        return {}

    @abstractmethod
    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        """Run the case: training ``problem.steps`` first where the op has running statistics,
        then ``problem.x`` forward and backward with ``problem.dy`` as upstream gradient."""


@dataclass(frozen=True)
class KnownIssue:
    """A documented defect of a framework: failing checks it explains are reported as known.

    Each entry is matched narrowly and carries the evidence that established it, so it can
    neither hide an unrelated failure nor outlive a fix unnoticed (``--strict`` fails on it).
    """

    cause: str
    ops: tuple[str, ...]
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] | None = None
    layouts: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    checks: tuple[str, ...] | None = None
    batch: int | None = None
    impls: tuple[str, ...] | None = None  # implementation names; None: every implementation

    def matches(self, case: Case, check: str) -> bool:
        return (
            case.op in self.ops
            and (self.impls is None or case.impl in self.impls)
            and case.device.split(":")[0] in self.devices
            and (self.dtypes is None or case.dtype in self.dtypes)
            and (self.layouts is None or case.layout in self.layouts)
            and (self.kinds is None or case.kind in self.kinds)
            and (self.checks is None or check in self.checks)
            and (self.batch is None or case.shape[0] == self.batch)
        )


@dataclass(frozen=True)
class FrameworkFacts:
    """What judging needs of a framework, without the framework: its name, whose conventions it
    follows and its documented defects. Small and picklable, so the parent process that judges
    never imports a framework or the user's code."""

    name: str
    conventions_of: str | None
    known_issues: tuple[KnownIssue, ...] = ()

    def convention(self, op: str) -> Convention:
        return CONVENTIONS[self.conventions_of or self.name][op]

    def known_issue(self, case: Case, check: str) -> KnownIssue | None:
        return next((k for k in self.known_issues if k.matches(case, check)), None)


class Framework(ABC):
    name: str
    conventions_of: str | None = None  # whose conventions it follows; None: its own name
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    known_issues: tuple[KnownIssue, ...] = ()

    def convention(self, op: str) -> Convention:
        return CONVENTIONS[self.conventions_of or self.name][op]

    def settings(self, op: str, dtype: str, eps: float | None = None, momentum: float | None = None) -> Settings:
        """The eps, momentum and running-variance rule a case of ``op`` runs with here."""
        return settings(self.convention(op), dtype, eps, momentum)

    def known_issue(self, case: Case, check: str) -> KnownIssue | None:
        return self.facts().known_issue(case, check)

    def facts(self) -> FrameworkFacts:
        return FrameworkFacts(self.name, self.conventions_of, tuple(self.known_issues))

    @abstractmethod
    def implementations(self, op: str) -> list[Implementation]:
        """The implementations of ``op``; empty when the framework has none."""

    def case_params(self, op: str, params: OpParams) -> OpParams:
        """The params this framework checks a planned case with (the case itself by default)."""
        return params

    def default_eps(self, op: str, dtype: str) -> float:
        """The eps the framework uses when the caller gives none."""
        return self.convention(op).default_eps(dtype)

    def default_momentum(self, op: str) -> float:
        """Default momentum, in PyTorch's meaning: the weight of the new batch."""
        return self.convention(op).default_new_weight

    def device_problem(self, device: str) -> str | None:
        """Why ``device`` cannot be used, or None."""
        return None if device == "cpu" else f"{self.name} has no {device} device here"
