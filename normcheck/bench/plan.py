"""From what the user asked for to the list of cases to time. Never prints, never exits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from normcheck import frameworks as registry
from normcheck.bench.records import PASSES
from normcheck.bench.shapes import BenchShape, default_shapes, quick_shapes, shape_params, with_settings
from normcheck.errors import UsageError
from normcheck.frameworks.base import Implementation
from normcheck.memory_estimate import memory_problem
from normcheck.names import ALL_OP_NAMES, DTYPE_NAMES, OP_NAMES, PROFILES, DtypeName, OpName
from normcheck.ops import OPS, OpParams
from normcheck.ops.quantize import Quantization
from normcheck.parsing import choose, parse_shape, split_list

MODES = ("eager", "compiled")
PASS_CHOICES = (*PASSES, "both")
DEFAULT_BASELINE = "torch"


@dataclass(frozen=True)
class BenchRequest:
    """A bench run as given: comma lists as strings, None for the defaults."""

    ops: str | None = None
    frameworks: str | None = None
    impl: Any = None
    backward: Any = None
    style: str | None = None
    device: str = "cpu"
    dtypes: str | None = None
    shapes: Sequence[str] = ()
    passes: str | None = None
    modes: str | None = None
    threads: int = 1
    baseline: str | None = None
    profile: str = "default"  # "quick": each op's smallest and largest default shape
    variant: str | None = None  # an op variant (gemma, nobias, paper, ...), as verify's --variant
    quantize: str | None = None  # FP8-quantized output (e4m3, e5m2) of your own code, as verify's
    scale: str | None = None  # its scale: row (default), tensor or static


@dataclass
class Source:
    """One framework's implementations to time (a built-in framework, or the user's code)."""

    name: str  # the framework column: a registry name, or "user"
    impls: dict[str, list[Implementation]]  # op -> implementations


@dataclass
class BenchPlan:
    ops: tuple[OpName, ...]
    shapes: dict[str, list[BenchShape]]
    dtypes: tuple[DtypeName, ...]
    passes: tuple[str, ...]
    modes: tuple[str, ...]
    sources: list[Source]
    device: str
    threads: int
    baseline: str | None
    notes: list[str] = field(default_factory=list)  # said once on stderr: frameworks left out, ...


def parse_passes(value: str | None) -> tuple[str, ...]:
    chosen = choose(value, PASS_CHOICES, "pass", ("both",))
    return PASSES if "both" in chosen else chosen


def _shapes(request: BenchRequest, ops: tuple[str, ...]) -> dict[str, list[BenchShape]]:
    quant = _quantization(request)
    if not request.shapes:
        chosen = quick_shapes if request.profile == "quick" else default_shapes
        return {op: with_settings(chosen(op, request.device), request.variant, quant) for op in ops}
    parsed = [parse_shape(s, allow_empty=False) for s in request.shapes]
    out: dict[str, list[BenchShape]] = {}
    for op in ops:
        out[op] = []
        for shape in parsed:
            params = shape_params(op, shape)
            problem = OPS[op].validate(shape, params)
            if problem:
                raise UsageError(problem)
            out[op] += with_settings([BenchShape(op, shape, params, "")], request.variant, quant)
    for shape in parsed:
        problem = memory_problem(shape)
        if problem:
            raise UsageError(problem)
    return out


def _device_check(names: list[str], explicit: bool, device: str) -> tuple[list[str], list[str]]:
    """(frameworks that can use ``device``, notes); UsageError when none can, or an explicitly
    requested one cannot."""
    if device == "cpu":
        return names, []
    if not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; choose from cpu, cuda")
    problems = {name: registry.bench_module(name).device_problem(device) for name in names}
    missing = {n: p for n, p in problems.items() if p}
    usable = [n for n in names if not problems[n]]
    if not usable or (explicit and missing):
        raise UsageError(f"no GPU for {device}: " + "; ".join(missing.values()))
    return usable, [f"left out on {device}: {p}" for p in missing.values()]


def validate(request: BenchRequest) -> None:
    """The checks ``prepare`` makes that load nothing (no framework, no user code), so the parent
    process refuses a bad request at once. UsageError otherwise."""
    r = request
    if r.profile not in PROFILES:
        raise UsageError(f"unknown profile {r.profile!r}; choose from {', '.join(PROFILES)}")
    choose(r.dtypes, DTYPE_NAMES, "dtype", ("float32",))
    parse_passes(r.passes)
    choose(r.modes, MODES, "mode", ("eager",))
    _baseline(r, _timed_frameworks(r))
    if r.device != "cpu" and not r.device.startswith("cuda"):
        raise UsageError(f"unknown device {r.device!r}; choose from cpu, cuda")
    ops = choose(r.ops, ALL_OP_NAMES, "op", () if r.impl is not None else OP_NAMES)
    _check_settings(r, ops)
    if r.impl is None:
        _shapes(r, ops)


def _quantization(r: BenchRequest) -> Quantization | None:
    """The FP8 output a request times (normcheck.ops.quantize.Quantization), or None."""
    if r.quantize is None:
        return None
    from normcheck.ops.quantize import ROW

    return Quantization(r.quantize, r.scale or ROW)


def _check_settings(r: BenchRequest, ops: tuple[OpName, ...]) -> None:
    """--variant, --quantize and --scale, by verify's rules."""
    from normcheck.verify.request import check_fp8, check_variant

    check_variant(r.variant, ops, r.impl is not None)
    check_fp8(r.quantize, r.scale, ops)


def _timed_frameworks(r: BenchRequest) -> list[str]:
    """The frameworks asked for (default: every installed one, NumPy included); UsageError for one
    that is not installed."""
    every = [name for name in registry.REGISTRY if registry.is_installed(name)]
    names = list(choose(r.frameworks, tuple(registry.REGISTRY), "framework", every))
    for name in names:
        if not registry.is_installed(name):
            extra = registry.REGISTRY[name].extra
            raise UsageError(f"{name} is not installed; pip install 'normcheck[{extra}]'")
    return names


def _baseline(r: BenchRequest, names: list[str]) -> str | None:
    baseline = r.baseline if r.baseline is not None else (DEFAULT_BASELINE if DEFAULT_BASELINE in names else None)
    if baseline is not None and baseline not in (*names, "user"):
        raise UsageError(f"--baseline {baseline} is not among the frameworks timed ({', '.join(names)})")
    return baseline


def prepare(request: BenchRequest) -> BenchPlan:
    """Validate and plan ``request``. Loads the frameworks it needs (after the threads are set)."""
    r = request
    dtypes = choose(r.dtypes, DTYPE_NAMES, "dtype", ("float32",))
    passes = parse_passes(r.passes)
    modes = choose(r.modes, MODES, "mode", ("eager",))
    explicit = bool(split_list(r.frameworks))
    names = _timed_frameworks(r)
    baseline = _baseline(r, names)
    names, notes = _device_check(names, explicit, r.device)
    user = None
    ops_given = split_list(r.ops)
    if r.impl is not None:
        ops, user = _user_source(r, names, ops_given)
    else:
        ops = choose(r.ops, ALL_OP_NAMES, "op", OP_NAMES)
    _check_settings(r, ops)
    shapes = _shapes(r, ops)  # before the frameworks load: a bad shape fails fast
    sources = [user] if user is not None else []
    settings = OpParams(variant=r.variant, quant=_quantization(r))
    for name in names:
        sources.append(Source(name, {op: _able(_builtin_impls(name, op), op, settings) for op in ops}))
    _refuse_untimed(ops, sources, names, r.variant, r.quantize)
    return BenchPlan(ops, shapes, dtypes, passes, modes, sources, r.device, r.threads, baseline, notes)


def _able(impls: list[Implementation], op: str, settings: OpParams) -> list[Implementation]:
    """The built-in implementations that compute ``op`` with the variant and FP8 output of
    ``settings`` (verify shows the others as skips; bench leaves them out)."""
    from normcheck.ops.extensions import needed_extensions
    from normcheck.verify.plan import planned_for

    needed = needed_extensions(op, settings)
    return [i for i in planned_for(impls, op, settings) if all(n in i.extensions for n in needed)]


def _refuse_untimed(
    ops: tuple[OpName, ...], sources: list[Source], names: list[str], variant: str | None, quantize: str | None
) -> None:
    """An op no source has (the fused ops, adaLN and Weight Standardization are built into one
    framework or none; Gemma's RMS norm into none) is a usage error, not a run that times nothing."""
    for op in ops:
        if not any(source.impls.get(op) for source in sources):
            from normcheck.verify.request import builtin_owner

            if quantize is not None:
                raise UsageError(
                    f"no framework timed has {op} with FP8-quantized output built in ({', '.join(names) or 'none'}); "
                    "onnxruntime has (the norm, then QuantizeLinear), or time your own with --impl"
                )
            if variant is not None:
                raise UsageError(
                    f"no framework timed has {op} with the {variant} variant built in ({', '.join(names) or 'none'}); "
                    "time your own with --impl"
                )
            raise UsageError(
                f"no framework timed has {op} built in ({', '.join(names) or 'none'}); {builtin_owner(op)}, "
                "or time your own with --impl"
            )


def _builtin_impls(name: str, op: str) -> list[Implementation]:
    return registry.bench_module(name).implementations(op)


def _user_source(r: BenchRequest, names: list[str], ops_given: list[str]) -> tuple[tuple[OpName, ...], Source]:
    """The user's implementation in its explicit call style (every argument given)."""
    from normcheck.user import FUNCTION_FRAMEWORKS
    from normcheck.user.resolve import resolve_impl

    written_for = [n for n in split_list(r.frameworks) if n in FUNCTION_FRAMEWORKS]
    hint = written_for[0] if len(written_for) == 1 else None
    ops, fws, load_rows = resolve_impl(r, hint, ops_given)
    if load_rows:
        raise UsageError(load_rows[0].message)
    explicit = fws[0]
    if r.device != "cpu":
        problem = explicit.device_problem(r.device)
        if problem:
            raise UsageError(f"{explicit.impl_name} cannot run on {r.device}: {problem}")
    return ops, Source("user", {op: explicit.implementations(op) for op in ops})
