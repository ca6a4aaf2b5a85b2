"""verify's plan: the case matrix a request asks for (ops × shapes × params × frameworks ×
implementations × dtypes × input kinds × layouts), in a stable order, optionally sharded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar

from normcheck.conventions import Settings
from normcheck.frameworks.base import Framework, Implementation
from normcheck.names import DtypeName, InputKind, OpName
from normcheck.ops import FUSED_BASE, OPS, OpParams
from normcheck.problem import Problem
from normcheck.verify.inputs import KINDS, make_problem
from normcheck.verify.quick_cases import in_quick
from normcheck.verify.records import Case

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    ops: tuple[OpName, ...]
    dtypes: tuple[DtypeName, ...]
    shapes: tuple[tuple[int, ...], ...] = ()  # empty: each op's default grid
    groups: tuple[int, ...] = ()
    normalized_ndim: tuple[int, ...] = ()
    kinds: tuple[InputKind, ...] = KINDS
    device: str = "cpu"
    seed: int = 0
    tolerance: tuple[float, float] | None = None  # (rtol, atol) given by the user
    eps: float | None = None  # given by the user; None: each framework's default
    momentum: float | None = None  # given by the user, in PyTorch's meaning
    against: Framework | None = None  # also compare every framework directly with this one
    explicit_dtypes: bool = False  # asked for by the user: an unsupported dtype is an error
    shard: tuple[int, int] | None = None  # (K, N): run slice K of N of the case matrix
    timeout: float | None = None  # seconds one case may take in a worker before it is an error
    diagnose: bool = True  # test the known-mistake hypotheses on every failing case
    world_sizes: tuple[int, ...] = ()  # batch norm over torch.distributed, in this many ranks each
    profile: str = "default"  # "quick": only the cases of normcheck.verify.quick_cases.QUICK
    variant: str | None = None  # an op variant (OpParams.variant), e.g. "gemma"; None: the ops themselves


@dataclass
class Unit:
    """One set of inputs and every implementation that runs on it."""

    op: OpName
    shape: tuple[int, ...]
    params: OpParams
    dtype: DtypeName
    kind: InputKind
    framework: Framework
    runs: list[tuple[Case, Implementation]] = field(default_factory=list)
    order: tuple[int, int] = (0, 0)  # (op, case) position in the plan: parts planned apart merge by it
    skip: str | None = None  # why this variant cannot run on its shape: each case is a skip row


def op_cases(op: str, opts: Options) -> list[tuple[tuple[int, ...], OpParams]]:
    """(shape, params) pairs to check for ``op``: the user's shapes or the default grid."""
    spec = OPS[op]
    if not opts.shapes:
        return spec.variant_cases(opts.variant) if opts.variant is not None else spec.default_cases()
    cases = []
    for shape in opts.shapes:
        for params in spec.cases_for_shape(shape, list(opts.groups), list(opts.normalized_ndim)):
            cases.append((shape, params if opts.variant is None else replace(params, variant=opts.variant)))
    return cases


def invalid_cases(opts: Options) -> list[str]:
    """One message per user shape that cannot be checked as asked: no variant of any op asked
    for can take it, or an explicit --groups does not divide its channels. A shape some op's
    variant can take is checked; the variants that cannot take it become skip rows saying why
    (see ``plan``): ``--op in,ln --shape 2,9`` checks layer norm and skips instance norm."""
    problems = []
    invalid: dict[tuple[int, ...], str] = {}
    valid: set[tuple[int, ...]] = set()
    for op in opts.ops:
        for shape, params in op_cases(op, opts):
            reason = OPS[op].validate(shape, params)
            if reason and _ungrouped(op, reason):
                if opts.groups:
                    problems.append(reason)
            elif reason:
                invalid.setdefault(shape, reason)
            else:
                valid.add(shape)
    problems += [reason for shape, reason in invalid.items() if shape not in valid]
    return list(dict.fromkeys(problems))


def _ungrouped(op: str, reason: str) -> bool:
    """Whether ``reason`` is group norm's G not dividing C: an error for an explicit --groups,
    a variant silently left out for one the plan chose."""
    return op == "gn" and "divisible" in reason


def plan(opts: Options, frameworks: list[Framework]) -> list[Unit]:
    """The units of ``opts`` in plan order; a variant its shape cannot take is planned as units
    whose cases are skip rows saying why."""
    units: list[Unit] = []
    seen: dict[int, set] = {}
    for op_i, op in enumerate(opts.ops):
        for case_i, (shape, params) in enumerate(op_cases(op, opts)):
            reason = OPS[op].validate(shape, params)
            if reason and _ungrouped(op, reason):
                continue
            for fw in frameworks:
                if op in FUSED_BASE and not fw.implementations(op):
                    continue  # a framework without the fused op (most of them) plans no case of it
                # two variants a framework runs alike (its case_params) are one case; the quick
                # profile may want different dtypes and kinds of each
                fw_params = fw.case_params(op, params)
                if opts.world_sizes:
                    impls = fw.distributed_implementations(op, opts.world_sizes, opts.device, opts.timeout)
                else:
                    impls = fw.implementations(op)
                for dtype in checked_dtypes(opts, fw):
                    for kind in opts.kinds:
                        if opts.profile == "quick" and not in_quick(op, shape, params, dtype, kind):
                            continue
                        if (fw_params, shape, dtype, kind) in seen.setdefault(id(fw), set()):
                            continue
                        seen[id(fw)].add((fw_params, shape, dtype, kind))
                        unit = Unit(op, shape, fw_params, dtype, kind, fw, order=(op_i, case_i), skip=reason)
                        for impl in impls:
                            for layout in impl.layouts(shape):
                                case = Case(op, fw.name, impl.name, shape, fw_params, dtype, kind, layout, opts.device)
                                unit.runs.append((case, impl))
                        units.append(unit)
    return shard(units, opts.shard) if opts.shard else units


def checked_dtypes(opts: Options, fw: Framework) -> tuple[DtypeName, ...]:
    """The dtypes ``fw`` is checked in: those the user named, else the defaults it declares."""
    return opts.dtypes if opts.explicit_dtypes else tuple(d for d in opts.dtypes if d in fw.dtypes)


def shard(units: list[Unit], spec: tuple[int, int]) -> list[Unit]:
    """Slice K of N (1-based) of the case matrix: every N-th case in plan order, starting at the
    K-th, so the slices are disjoint, cover every case and take about as long each."""
    return _every_nth(units, spec, "runs")


def shard_cases(units: list[T], spec: tuple[int, int]) -> list[T]:
    """``shard`` for the engine's planned units (their cases in ``cases``)."""
    return _every_nth(units, spec, "cases")


def _every_nth(units: list[T], spec: tuple[int, int], items: str) -> list[T]:
    k, n = spec
    index, kept = 0, []
    for unit in units:
        mine = []
        for item in getattr(unit, items):
            if index % n == k - 1:
                mine.append(item)
            index += 1
        if mine:
            kept.append(replace(unit, **{items: type(getattr(unit, items))(mine)}))  # type: ignore[type-var]
    return kept


def aligned_settings(unit: Unit, opts: Options) -> Settings:
    """The unit's eps and momentum: the user's, else (with --against) the baseline framework's
    defaults, else its own framework's defaults; translated into the framework's meaning."""
    eps, momentum = opts.eps, opts.momentum
    if opts.against is not None:
        eps = opts.against.default_eps(unit.op, unit.dtype) if eps is None else eps
        momentum = opts.against.default_momentum(unit.op) if momentum is None else momentum
    return unit.framework.settings(unit.op, unit.dtype, eps, momentum)


def problem_for(unit: Unit, opts: Options) -> Problem:
    """The unit's inputs under its framework's conventions."""
    return settled_problem(
        unit.op, unit.shape, unit.params, unit.dtype, unit.kind, aligned_settings(unit, opts), opts.seed
    )


def settled_problem(
    op: OpName,
    shape: tuple[int, ...],
    params: OpParams,
    dtype: DtypeName,
    kind: InputKind,
    s: Settings,
    seed: int,
) -> Problem:
    """A case's inputs with the eps, momentum and running-variance rule it runs under."""
    return make_problem(
        op,
        shape,
        params,
        dtype,
        kind,
        eps=s.eps,
        momentum=s.momentum,
        seed=seed,
        unbiased_running_var=s.unbiased_running_var,
    )


def translations(units: list[Unit], opts: Options) -> list[str]:
    """How explicit (or aligned) eps and momentum were given to each framework, once each."""
    notes: dict[str, None] = {}
    for unit in units:
        for note in aligned_settings(unit, opts).notes:
            notes[note] = None
    return list(notes)
