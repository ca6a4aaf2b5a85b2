"""verify's work as the worker does it, and the plan as the parent keeps it.

A request is planned in parts (one per built-in framework, or one for a user implementation),
each in a worker, so frameworks import in parallel; the parent merges the parts into plan order.
The parent keeps only picklable facts: the cases, the settings that make each unit's inputs, and
each framework's documented defects. The worker keeps what it loaded, per request and part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from normcheck.conventions import Settings
from normcheck.frameworks.base import Framework, FrameworkFacts
from normcheck.names import DtypeName, InputKind, OpName
from normcheck.ops import OpParams
from normcheck.problem import Problem
from normcheck.verify.plan import Options, Unit, aligned_settings, settled_problem, translations
from normcheck.verify.records import ERROR, RUN, Case, CheckResult
from normcheck.verify.request import Prepared, Request, prepare
from normcheck.verify.run import Outcome, run_baseline, run_case

USER_PART = "user"


@dataclass(frozen=True)
class PlannedUnit:
    """One set of inputs and the cases run on it, as the parent knows them."""

    order: tuple[int, int, int]  # (op, case, framework) position: merged parts sort by it
    part: str  # the worker part that runs it: a framework name or "user"
    framework: int  # index into Plan.frameworks
    local: int  # index of its framework among the part's frameworks
    op: OpName
    shape: tuple[int, ...]
    params: OpParams
    dtype: DtypeName
    kind: InputKind
    settings: Settings
    cases: tuple[Case, ...]
    skip: str | None = None  # why the variant cannot run on its shape: its cases are skip rows

    @property
    def key(self) -> tuple:
        """What identifies the unit in the worker's own plan of its part."""
        return (self.local, self.op, self.shape, self.params, self.dtype, self.kind)

    def problem(self, seed: int) -> Problem:
        return settled_problem(self.op, self.shape, self.params, self.dtype, self.kind, self.settings, seed)


@dataclass
class PartPlan:
    """One part as a worker planned it."""

    frameworks: list[FrameworkFacts]
    units: list[PlannedUnit]
    load_rows: list[CheckResult]
    translations: list[str]
    against: FrameworkFacts | None
    opts: Options  # without the live baseline framework


@dataclass
class Plan:
    """A whole request as the parent runs it."""

    request: Request
    req_id: str  # what workers know the request by
    opts: Options  # against is None here; see against
    frameworks: list[FrameworkFacts]
    units: list[PlannedUnit]
    load_rows: list[CheckResult] = field(default_factory=list)
    translations: list[str] = field(default_factory=list)
    against: FrameworkFacts | None = None
    unsharded: int = 0  # cases before --shard took its slice

    @property
    def total(self) -> int:
        return sum(len(u.cases) for u in self.units) + len(self.load_rows)


# ---- the worker's side ---------------------------------------------------------------------

_prepared: dict[tuple[str, str], tuple[Prepared, dict[tuple, Unit]]] = {}


def forget(req_ids: list[str]) -> None:
    """Drop what this process loaded for these requests (inline: the caller's process lives on)."""
    for key in [k for k in _prepared if k[0] in req_ids]:
        del _prepared[key]


def part_request(request: Request, part: str) -> Request:
    """The request narrowed to one part, unsharded (the parent shards the merged plan)."""
    if part == USER_PART:
        return replace(request, shard=None)
    return replace(request, frameworks=part, shard=None)


def _prepared_part(req_id: str, request: Request, part: str) -> tuple[Prepared, dict[tuple, Unit]]:
    key = (req_id, part)
    if key not in _prepared:
        prepared = prepare(part_request(request, part), whole=False)
        index = {}
        for unit in prepared.units:
            local = _local(prepared.frameworks, unit.framework)
            index[(local, unit.op, unit.shape, unit.params, unit.dtype, unit.kind)] = unit
        _prepared[key] = (prepared, index)
    return _prepared[key]


def _local(frameworks: list[Framework], framework: Framework) -> int:
    same = [f for f in frameworks if f.name == framework.name]
    return next(i for i, f in enumerate(same) if f is framework)


def plan_part(payload: tuple[str, Request, str], send: Callable[[Any], None]) -> None:
    req_id, request, part = payload
    prepared, _ = _prepared_part(req_id, request, part)
    facts = [f.facts() for f in prepared.frameworks]
    units = []
    for unit in prepared.units:
        fw = prepared.frameworks.index(unit.framework)
        units.append(
            PlannedUnit(
                order=(*unit.order, fw),
                part=part,
                framework=fw,
                local=_local(prepared.frameworks, unit.framework),
                op=unit.op,
                shape=unit.shape,
                params=unit.params,
                dtype=unit.dtype,
                kind=unit.kind,
                settings=aligned_settings(unit, prepared.opts),
                cases=tuple(c for c, _ in unit.runs),
                skip=unit.skip,
            )
        )
    opts = prepared.opts
    against = opts.against.facts() if opts.against is not None else None
    send(
        (
            "plan",
            PartPlan(
                facts,
                units,
                prepared.load_rows,
                translations(prepared.units, opts),
                against,
                replace(opts, against=None),
            ),
        )
    )


def freeze(problem: Problem) -> Problem:
    """Inputs arrive as writable copies; an implementation that writes into them must fail."""
    for name in ("x", "dy", "weight", "bias", "running_mean", "running_var"):
        a = getattr(problem, name)
        if isinstance(a, np.ndarray):
            a.setflags(write=False)
    for a in problem.steps:
        a.setflags(write=False)
    return problem


def run_units(
    payload: tuple[str, Request, str, list[tuple[int, tuple, Problem, list[Case]]]], send: Callable[[Any], None]
) -> None:
    """Run the given cases, sending one ("case", ...) message per case as it finishes (and, with
    --against, one ("baseline", ...) per unit first), so the parent's clock runs per case."""
    req_id, request, part, items = payload
    prepared, index = _prepared_part(req_id, request, part)
    send(("ready", None))
    opts = prepared.opts
    for unit_id, key, problem, cases in items:
        unit = index.get(key)
        problem = freeze(problem)
        if opts.against is not None and unit is not None and unit.framework.name != opts.against.name:
            send(("baseline", (unit_id, run_baseline(opts.against, problem, opts.device, opts))))
        runs = dict(unit.runs) if unit is not None else {}
        for case in cases:
            impl = runs.get(case)
            if impl is None:  # the code planned differently this time (it is not deterministic)
                row = CheckResult(
                    case,
                    RUN,
                    ERROR,
                    message="the implementation planned this case differently in "
                    "another process (does its layouts() depend on state?)",
                )
                send(("case", (unit_id, case, Outcome(None, [row]))))
                continue
            send(("case", (unit_id, case, run_case(case, impl, problem, opts))))
