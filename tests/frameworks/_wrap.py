"""Wrap a plain function with a torch.nn.functional signature as a normcheck implementation,
and run one case of it through the engine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from normcheck.frameworks.base import Framework, Implementation
from normcheck.frameworks.torch import facts
from normcheck.frameworks.torch.adapter import Bound, TorchImplementation, framework
from normcheck.frameworks.torch.forms import function_binder
from normcheck.ops import OpParams
from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.judge import unrepresentable_statistics
from normcheck.verify.local import check_case
from normcheck.verify.plan import Options
from normcheck.verify.records import RUN, SKIP, Case, CheckResult
from normcheck.verify.tolerance import witness_errors

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the fixtures live beside the package, not in it
    sys.path.insert(0, str(ROOT))

from fixtures import torch_functional as tf

TORCH = framework()

__all__ = ["TORCH", "FixtureFramework", "binder", "check", "problem_for", "tf", "wrap"]


def binder(fn: Callable) -> Callable[[Problem, str], Bound]:
    """``fn`` called as the torch.nn.functional op, every optional argument given explicitly:
    the user-function form's binder."""
    return function_binder(fn, omit_defaults=False)


def wrap(op: str, fn: Callable) -> TorchImplementation:
    return TorchImplementation(op, f"fixtures.{fn.__name__}", binder(fn))


class FixtureFramework(Framework):
    """The given fixtures as a framework of their own, with PyTorch's defaults and no known issues,
    so ``verify.plan`` and ``verify.run`` check them exactly as they check a real framework."""

    name = "fixtures"
    conventions = facts.TORCH

    def __init__(self, fns: dict[str, list[Callable]]) -> None:
        self._impls = {op: [wrap(op, fn) for fn in fs] for op, fs in fns.items()}

    def implementations(self, op: str) -> list[Implementation]:
        return self._impls.get(op, [])


def problem_for(op: str, shape: tuple[int, ...], params: OpParams, dtype: str, kind: str, seed: int = 0) -> Problem:
    """The inputs ``verify.run`` would make for this case with the torch adapter's defaults."""
    return make_problem(
        op,
        shape,
        params,
        dtype,
        kind,
        eps=TORCH.default_eps(op, dtype),
        momentum=TORCH.default_momentum(op),
        seed=seed,
    )


def check(
    impl: Implementation,
    shape: tuple[int, ...],
    params: OpParams,
    dtype: str,
    kind: str,
    layout: str = "contiguous",
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, CheckResult]:
    """Run one case of ``impl`` through the engine as ``verify.run`` does; the records by check name."""
    problem = problem_for(impl.op, shape, params, dtype, kind, seed)
    expected = reference(problem)
    case = Case(impl.op, "fixtures", impl.name, shape, params, dtype, kind, layout, device)
    unheld = unrepresentable_statistics(problem, expected)
    if unheld:
        return {RUN: CheckResult(case, RUN, SKIP, message=unheld)}
    errs = witness_errors(problem, expected)
    opts = Options(ops=(impl.op,), dtypes=(dtype,), kinds=(kind,), device=device, seed=seed)
    return {r.check: r for r in check_case(case, impl, problem, expected, errs, opts)}
