"""verify's plan: the case matrix a request asks for (ops × shapes × params × frameworks ×
implementations × dtypes × input kinds × layouts), in a stable order, optionally sharded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from normcheck.conventions import Settings
from normcheck.frameworks.base import Framework, Implementation
from normcheck.names import ADAPTIVE_OP_NAMES, WS_OP_NAMES, DtypeName, InputKind, Layout, OpName
from normcheck.ops import FUSED_BASE, OPS, OpParams
from normcheck.ops.extensions import needed_extensions
from normcheck.ops.layer_norm import axes_cases
from normcheck.ops.quantize import QUANTIZED
from normcheck.problem import Problem
from normcheck.verify.inputs import KINDS, make_problem
from normcheck.verify.policy import policy_params
from normcheck.verify.quick_cases import in_quick
from normcheck.verify.records import Case
from normcheck.verify.stress_cases import STRESS, StressCase, stress_case, stress_cases, stress_layouts, stress_skip

if TYPE_CHECKING:
    from normcheck.ops.quantize import Quantization

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    ops: tuple[OpName, ...]
    dtypes: tuple[DtypeName, ...]
    shapes: tuple[tuple[int, ...], ...] = ()  # empty: each op's default grid
    groups: tuple[int, ...] = ()
    normalized_ndim: tuple[int, ...] = ()
    axes: tuple[tuple[int, ...], ...] = ()  # layer norm over each of these axes sets (OpParams.axes)
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
    profile: str = "default"  # "quick": only the cases of normcheck.verify.quick_cases.QUICK; "stress": stress_cases
    variant: str | None = None  # an op variant (OpParams.variant), e.g. "gemma"; None: the ops themselves
    policy: str | None = None  # a precision policy (normcheck.policies) the forward is held to, ulp for ulp
    quant: Quantization | None = None  # the output quantized to FP8 (OpParams.quant); None: not quantized


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
    if opts.quant is not None:  # the same cases with the output quantized (normcheck.ops.quantize)
        return [(s, replace(p, quant=opts.quant)) for s, p in op_cases(op, replace(opts, quant=None))]
    if opts.profile == STRESS:  # its own cases (normcheck.verify.stress_cases)
        return [(c.shape, c.params) for c in stress_cases(op, opts.device)]
    spec = OPS[op]
    if opts.axes and op == "ln":
        cases = axes_cases(opts.axes, opts.shapes)
        return cases if opts.variant is None else [(s, replace(p, variant=opts.variant)) for s, p in cases]
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


def planned_for(impls: list[Implementation], op: str, params: OpParams) -> list[Implementation]:
    """The implementations planned for a case of ``op`` with ``params``: not those that require an
    extension the case does not need (``Implementation.requires``)."""
    needed = set(needed_extensions(op, params))
    if params.quant is not None:  # a quantized case: only what has an FP8 output, not a skip row per norm
        impls = [i for i in impls if QUANTIZED in i.extensions]
    return [i for i in impls if getattr(i, "requires", frozenset()) <= needed]  # (test doubles may lack it)


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
            stress = stress_case(op, shape, params) if opts.profile == STRESS else None
            if stress is not None:  # too large for this machine: skip rows that say how large
                reason = reason or stress_skip(stress, opts.device)
            params = policy_params(params, opts.policy)  # the weight stored where the policy says
            for fw in frameworks:
                if (op in FUSED_BASE or op in ADAPTIVE_OP_NAMES or op in WS_OP_NAMES) and not fw.implementations(op):
                    continue  # a framework without the fused op, adaLN or WS (most of them) plans no case of it
                # two variants a framework runs alike (its case_params) are one case; the quick
                # profile may want different dtypes and kinds of each
                fw_params = fw.case_params(op, params)
                if opts.world_sizes:
                    impls = fw.distributed_implementations(op, opts.world_sizes, opts.device, opts.timeout)
                else:
                    impls = planned_for(fw.implementations(op), op, params)
                if params.quant is not None and not impls:
                    continue  # no FP8-quantized form (every framework but ONNX Runtime): no case of it
                for dtype in checked_dtypes(opts, fw):
                    for kind in opts.kinds:
                        if opts.profile == "quick" and not in_quick(op, shape, params, dtype, kind):
                            continue
                        if stress is not None and not (dtype in stress.dtypes and kind in stress.kinds):
                            continue
                        # the op too: layer and RMS norm share shapes and params, and each is checked
                        if (op, fw_params, shape, dtype, kind) in seen.setdefault(id(fw), set()):
                            continue
                        seen[id(fw)].add((op, fw_params, shape, dtype, kind))
                        unit = Unit(op, shape, fw_params, dtype, kind, fw, order=(op_i, case_i), skip=reason)
                        for impl in impls:
                            for layout in _layouts(impl, shape, stress, kind):
                                case = Case(op, fw.name, impl.name, shape, fw_params, dtype, kind, layout, opts.device)
                                unit.runs.append((case, impl))
                        if unit.runs or stress is None:  # a stress case in views no implementation has: none
                            units.append(unit)
    return shard(units, opts.shard) if opts.shard else units


def _layouts(impl: Implementation, shape: tuple[int, ...], stress: StressCase | None, kind: str) -> tuple[Layout, ...]:
    """The layouts ``impl`` runs a case in: its own, or a stress case's of those it offers."""
    if stress is None:
        return impl.layouts(shape)
    return stress_layouts(stress, kind, impl.layouts(shape) + impl.stress_layouts(shape))


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
