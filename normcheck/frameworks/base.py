"""The one interface every framework folder implements (normcheck/frameworks/<name>/).

- ``Framework`` and ``Implementation``: what verify, bench, diagnosis and the user forms call on
  a framework and on one of its implementations of an op (the adapter module's ``framework()``
  returns a Framework);
- ``AdapterModule``, ``FormsModule``, ``BenchModule`` and ``FactsModule``: what each module of a
  framework's folder provides (the registry, normcheck.frameworks, loads them by name and returns
  them as these types);
- ``KnownIssue`` (a documented defect, declared in the facts module) and ``FrameworkFacts`` (what
  judging needs of a framework, without the framework);
- ``ReproModule``: what a framework's repro module provides (a reproducer's code, as text);
- ``RunOutput`` and ``Unsupported``: what the adapters share when they run a case (a case's
  initial running statistics come from ``Problem.initial_running``).

A framework's implementation classes may offer more (how its bench module binds a case, say);
those are public, documented methods of the classes, used only inside the framework's folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from normcheck.bench.target import Target
from normcheck.conventions import Convention, Settings, settings
from normcheck.names import CONTIGUOUS, Layout
from normcheck.ops import FUSED_BASE, OpParams
from normcheck.ops.adaptive_layer_norm import ADALN, DIT_EPS
from normcheck.problem import Problem
from normcheck.repro.call import ReproCall, Snippet
from normcheck.verify.records import Case
from normcheck.ws_conventions import WS_CONVENTIONS


def op_convention(conventions: Mapping[str, Convention], op: str) -> Convention:
    """The convention a case of ``op`` follows: its own, a fused op's norm's, or for adaLN (which no
    framework has built in) the framework's layer norm with DiT's eps of 1e-6."""
    if op in conventions:
        return conventions[op]
    if op in WS_CONVENTIONS:  # no framework has Weight Standardization built in: timm's convention
        return WS_CONVENTIONS[op]
    if op == ADALN:
        return replace(
            conventions["ln"],
            op=ADALN,
            api="DiT's modulate(nn.LayerNorm(elementwise_affine=False, eps=1e-6)(x), shift, scale)",
            eps=DIT_EPS,
            reduction="the last axis (D) of (N, T, D)",
            affine="shift and scale (N, D), one row per sample, given with x",
        )
    return conventions[FUSED_BASE[op]]


class Unsupported(Exception):
    """The implementation cannot run this case at all (a dtype or device it lacks)."""


@dataclass
class RunOutput:
    """What an implementation produced: float64 copies of each checked tensor and their dtypes."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    # check -> the memory format the implementation returned it in ("channels_last", "contiguous"
    # or "strided"), recorded for channels-last input; the stress profile judges it
    # (normcheck.verify.memory_format)
    memory_formats: dict[str, str] = field(default_factory=dict)
    # checks this run does not produce by design, each with the reason (an in-place call's gradients)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, check: str, value: np.ndarray, dtype: str) -> None:
        self.values[check] = np.asarray(value, dtype=np.float64)
        self.dtypes[check] = dtype


class Implementation(ABC):
    """One way a framework computes an op (a function, a layer class, ...)."""

    framework: str  # the registry entry whose bench module times it (its folder's name)
    op: str
    name: str  # as reports show it

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        """Layouts the case runs in: "contiguous" is the canonical channels-first layout,
        "channels_last" has the channels on the last axis."""
        return (CONTIGUOUS,)

    def stress_layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        """The stress profile's further layouts it can run in (names.StressLayout: strided views
        of the input, an in-place call); none by default."""
        return ()

    # What it computes beyond the five plain ops: the op variants (OpParams.variant: "gemma",
    # "nobias") and "fused_add" (add_rms, add_ln). A case that needs one it lacks is a skip row
    # (run.execute), never run with a formula it does not have.
    extensions: frozenset[str] = frozenset()
    # The extensions a case must need for this implementation to be planned for it at all: one
    # that computes nothing but an FP8-quantized output is not planned for the plain cases.
    requires: frozenset[str] = frozenset()

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

    The fields below ``hypotheses`` are a fingerprint: they choose the rows where the defect's
    hypotheses are re-run. A matching row is known, confirmed when one of them reproduces it
    (it then carries that evidence) and marked unconfirmed otherwise; ``--strict`` fails on
    both, so an entry cannot outlive a fix unnoticed.
    """

    cause: str
    ops: tuple[str, ...]
    # the diagnosis hypotheses that reproduce it, re-run on every failing row the fingerprint
    # below matches
    hypotheses: tuple[str, ...] = ()
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
    """What judging needs of a framework, without the framework: its name, the conventions it
    follows and its documented defects. Small and picklable, so the parent process that judges
    never imports a framework or the user's code."""

    name: str
    conventions: Mapping[str, Convention] = field(hash=False)  # op -> the convention it follows
    known_issues: tuple[KnownIssue, ...] = ()
    form: str | None = None  # user code: the form it is written in (normcheck.frameworks.FORMS)
    omit_defaults: bool = False  # user code: called with its optional arguments left out

    def convention(self, op: str) -> Convention:
        return op_convention(self.conventions, op)

    def known_issue(self, case: Case, check: str) -> KnownIssue | None:
        return next((k for k in self.known_issues if k.matches(case, check)), None)

    def known_issues_for(self, case: Case, check: str) -> tuple[KnownIssue, ...]:
        """Every documented defect whose fingerprint matches the row."""
        return tuple(k for k in self.known_issues if k.matches(case, check))


class Framework(ABC):
    """A framework's implementations of each op, under the conventions it follows.

    An adapter takes ``conventions`` and ``known_issues`` from its facts module (its
    ``CONVENTIONS[name]`` and ``KNOWN_ISSUES``); user code follows the conventions its form names.
    """

    name: str  # its registry name; "user" for user code
    conventions: Mapping[str, Convention]  # op -> the convention it follows
    # the dtypes checked when the user names none; a dtype named explicitly is run whatever this says
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    known_issues: tuple[KnownIssue, ...] = ()

    def convention(self, op: str) -> Convention:
        return op_convention(self.conventions, op)

    def settings(self, op: str, dtype: str, eps: float | None = None, momentum: float | None = None) -> Settings:
        """The eps, momentum and running-variance rule a case of ``op`` runs with here."""
        return settings(self.convention(op), dtype, eps, momentum)

    def known_issue(self, case: Case, check: str) -> KnownIssue | None:
        return self.facts().known_issue(case, check)

    def known_issues_for(self, case: Case, check: str) -> tuple[KnownIssue, ...]:
        return self.facts().known_issues_for(case, check)

    def facts(self) -> FrameworkFacts:
        return FrameworkFacts(self.name, dict(self.conventions), tuple(self.known_issues))

    @abstractmethod
    def implementations(self, op: str) -> list[Implementation]:
        """The implementations of ``op``; empty when the framework has none."""

    def distributed_implementations(
        self, op: str, world_sizes: tuple[int, ...], device: str, timeout: float | None
    ) -> list[Implementation]:
        """The implementations of ``op`` run over ``world_sizes`` rank processes each
        (``--world-size``); empty when the framework has none."""
        return []

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


# -- the modules of a framework's folder ----------------------------------------------------
# A module provides the members of its protocol at module level (PEP 544 allows a module as an
# implementation of a protocol); tests/frameworks/test_registry.py checks every one.


class AdapterModule(Protocol):
    """normcheck/frameworks/<name>/adapter.py: the framework's built-in implementations, to verify.
    Imports its framework at the top."""

    def framework(self) -> Framework:
        """The adapter, named as its registry entry."""
        ...


class FormsModule(Protocol):
    """normcheck/frameworks/<name>/forms.py: user code written for the framework (``--impl``), in
    the forms its registry entry lists. Imports its framework at the top."""

    def build(
        self, form: str, op: str, obj: object, name: str, omit_defaults: bool, backward: object | None
    ) -> Implementation | None:
        """The implementation of ``op`` by the user's ``obj`` in ``form``; None when the form has no
        version of ``op``. With ``omit_defaults`` the implementation leaves out every optional
        argument the case does not need (eps, momentum, weight and bias when there are none), so
        the framework's own defaults must apply; otherwise it passes them all. ``backward`` is the
        second function of a form that takes two (CS231n's), else None."""
        ...


class BenchModule(Protocol):
    """normcheck/frameworks/<name>/bench.py: timed calls of the framework's implementations (the
    built-in ones and the user's forms) for one case, pass and mode. Imports its framework at the
    top, so importing it is what loads the framework."""

    # --mode eager/compiled -> the variants it runs, each a row (TensorFlow's "compiled" is
    # tf.function and tf.function+XLA)
    MODES: Mapping[str, tuple[str, ...]]

    def implementations(self, op: str) -> list[Implementation]:
        """The built-in implementations of ``op`` bench times (the adapter's; NumPy's are the
        reference formulas in the case's dtype)."""
        ...

    def device_problem(self, device: str) -> str | None:
        """Why ``device`` cannot be used, or None."""
        ...

    def layout(self, impl: Implementation, shape: tuple[int, ...]) -> Layout:
        """The layout ``impl`` runs in (its native one)."""
        ...

    def build(self, impl: Implementation, problem: Problem, pass_: str, variant: str, device: str) -> Target:
        """The timed call of ``impl`` on ``problem``; raises Unsupported(reason) for a case it cannot time."""
        ...

    def set_threads(self, n: int) -> int | None:
        """Ask for ``n`` CPU threads; the count actually in effect afterwards (None: unknown)."""
        ...

    def classify(self, e: BaseException) -> str | None:
        """The kind of a failure: "oom" (out of memory), "skip" (a missing kernel) or None (anything else)."""
        ...


class FactsModule(Protocol):
    """normcheck/frameworks/<name>/facts.py: what is known of the framework without importing it,
    so the parent process and ``normcheck conventions`` read it at no cost."""

    # convention name -> op -> Convention: the framework's own (named as its registry entry), or
    # for NumPy the CS231n assignment's ("cs231n")
    CONVENTIONS: Mapping[str, Mapping[str, Convention]]
    KNOWN_ISSUES: tuple[KnownIssue, ...]  # the framework's documented defects (the adapter's known_issues)


class ReproModule(Protocol):
    """normcheck/frameworks/<name>/repro.py: the code a standalone reproducer runs a case with,
    as text, doing what the adapter (and for user code the forms module) does: layout, dtype,
    training steps, forward and backward. Imports no framework: the parent process writes it."""

    def snippet(self, call: ReproCall) -> Snippet | str:
        """The script's part for ``call``, or why this implementation (or form) cannot be
        reproduced faithfully without normcheck."""
        ...
