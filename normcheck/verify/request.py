"""One verify run as the user asked for it (flags, a config entry or the Python API), resolved
into the engine's Options and frameworks, and run into a Report. Never prints, never exits."""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from normcheck.errors import UsageError
from normcheck.frameworks.base import Framework
from normcheck.memory_estimate import memory_problem
from normcheck.names import (
    ALL_OP_NAMES,
    DEFAULT_DTYPES,
    DEFAULT_TIMEOUT,
    DTYPE_NAMES,
    KIND_NAMES,
    OP_NAMES,
    PROFILES,
    OpName,
)
from normcheck.ops import FUSED_BASE, OPS, OpParams
from normcheck.parsing import choose, parse_ints, parse_shape, split_list
from normcheck.verify.distributed import parse_world_sizes
from normcheck.verify.plan import Options, Unit, invalid_cases, plan
from normcheck.verify.records import ERROR, FAIL, KNOWN, STATUSES, CheckResult

if TYPE_CHECKING:
    import pandas as pd


ListLike = str | Sequence[str] | None


@dataclass(frozen=True)
class Request:
    """What to verify, as given: lists as comma strings or sequences, None for the defaults."""

    ops: ListLike = None
    frameworks: ListLike = None
    shapes: Sequence[str | Sequence[int]] = ()
    groups: str | int | Sequence[int] | None = None
    normalized_ndim: str | int | Sequence[int] | None = None
    dtypes: ListLike = None
    kinds: ListLike = None
    device: str = "cpu"
    seed: int = 0
    rtol: float | None = None
    atol: float | None = None
    eps: float | None = None
    momentum: float | None = None
    against: str | None = None
    impl: Any = None  # a SPEC string or the object itself
    backward: Any = None  # cs231n style: the backward function (SPEC or object)
    style: str | None = None
    shard: str | tuple[int, int] | None = None  # "K/N"
    timeout: float | None = DEFAULT_TIMEOUT
    name: str = ""  # a config entry's name, shown in messages
    profile: str = "default"  # "quick": the fewest default cases exposing every known mistake
    variant: str | None = None  # an op variant, e.g. "gemma" for rms (OpParams.variant)
    world_size: str | int | Sequence[int] | None = None  # batch norm over torch.distributed: ranks per run
    layout: str | None = None  # a function bound by name: nchw or nhwc (normcheck.user.binding)
    param_shape: str = "flat"  # a function bound by name: its gamma/beta (C,) or broadcastable


@dataclass
class Prepared:
    """A resolved request: the engine's plan, plus rows for what could not even be loaded."""

    request: Request
    opts: Options
    frameworks: list[Framework]
    units: list[Unit]
    load_rows: list[CheckResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(u.runs) for u in self.units) + len(self.load_rows)


@dataclass
class Report:
    """Every record of a run and its summary; what every renderer and the Python API consume."""

    results: list[CheckResult]
    summary: dict[str, Any]
    strict: bool = False
    interrupted: bool = False  # Ctrl-C: the results are those finished before it

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.results]

    @property
    def counts(self) -> dict[str, int]:
        return {s: self.summary.get(s, 0) for s in STATUSES}

    def failing(self) -> list[CheckResult]:
        bad = (FAIL, ERROR, KNOWN) if self.strict else (FAIL, ERROR)
        return [r for r in self.results if r.status in bad]

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.failing()

    def frame(self) -> pd.DataFrame:
        """The records as a pandas DataFrame, one row per check, for analysis (``report.frame()
        .query("status == 'fail'").groupby("dtype").max_abs_err.max()``)."""
        from normcheck.report.frames import records_frame

        return records_frame(self.records)

    def counts_by(self, *by: str) -> pd.DataFrame:
        """Checks per status for each group of ``by`` (e.g. ``"framework", "dtype"``)."""
        from normcheck.report.frames import status_counts

        return status_counts(self.records, by)


def items(value: ListLike) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ",".join(str(v) for v in value)


def _ints(value: str | int | Sequence[int] | None, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        value = [value]
    return parse_ints(value if value is None or isinstance(value, str) else ",".join(map(str, value)), what)


def _shape(value: str | Sequence[int]) -> tuple[int, ...]:
    return parse_shape(value if isinstance(value, str) else ",".join(map(str, value)))


def parse_shard(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        k_text, sep, n_text = value.partition("/")
        try:
            pair = (int(k_text), int(n_text)) if sep else None
        except ValueError:
            pair = None
        if pair is None:
            raise UsageError(f"malformed shard {value!r}; write K/N, e.g. 2/4 for the second of four slices")
        value = pair
    k, n = value
    if not 1 <= k <= n:
        raise UsageError(f"shard {k}/{n} does not exist; K runs from 1 to N")
    return (k, n)


def validate(request: Request) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The checks that need nothing loaded: (framework names, baseline). UsageError otherwise."""
    r = request
    _check_numbers(r)
    _check_cases(r)
    names, baseline = _check_frameworks(r)
    if r.impl is None:
        _refuse_invalid_cases(options(r, choose(items(r.ops), ALL_OP_NAMES, "op", OP_NAMES)))
    return names, baseline


# The numbers a request takes: the range each must lie in, in words, and the test. Flags, config
# keys and API keywords are checked against this one table. eps is a stabilizer added to the
# variance: below the smallest normal float64 it is lost in any variance, and from 1 up it is no
# longer small against the variances of the checks' inputs (about 1, tiny_scale about eps
# itself), so variance mistakes stop changing the output and a pass would claim more than it
# checked; no framework's default comes near (the largest is 1e-3).
NUMBER_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "rtol": ("at least 0 and below 1 (rtol 1 allows any value of the right sign)", lambda v: 0 <= v < 1),
    "atol": ("at least 0", lambda v: v >= 0),
    "eps": (
        f"positive, at least the smallest normal float64 ({sys.float_info.min:.3g}), and below 1 (a stabilizer, "
        "small against the variance)",
        lambda v: sys.float_info.min <= v < 1,
    ),
    "momentum": ("in [0, 1] (the weight of the new batch)", lambda v: 0 <= v <= 1),
    "timeout": ("positive", lambda v: v > 0),
}


def number_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be the request's number ``name`` ("must be ..."), or None. None
    (the default) is always fine; so is any real number type (NumPy's too) within the range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be a number, got {value!r}"
    shown = repr(value) if isinstance(value, int) else repr(float(value))
    if not math.isfinite(value):
        return f"must be a finite number, got {shown}"
    rule, fits = NUMBER_RANGES[name]
    return None if fits(float(value)) else f"must be {rule}, got {shown}"


def tolerance_pair_problem(has_rtol: bool, has_atol: bool) -> str | None:
    """Why a request with (or without) rtol and atol is refused: one without the other."""
    if has_rtol == has_atol:
        return None
    given, missing = ("rtol", "atol") if has_rtol else ("atol", "rtol")
    return f"{given} is given without {missing}; give rtol and atol together, or neither"


def _check_numbers(r: Request) -> None:
    for name in NUMBER_RANGES:
        problem = number_problem(name, getattr(r, name))
        if problem:
            raise UsageError(f"{name} {problem}")
    unpaired = tolerance_pair_problem(r.rtol is not None, r.atol is not None)
    if unpaired:
        raise UsageError(unpaired)
    if not isinstance(r.seed, int) or isinstance(r.seed, bool) or r.seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {r.seed!r}")


def _check_cases(r: Request) -> None:
    if r.profile not in PROFILES:
        raise UsageError(f"unknown profile {r.profile!r}; choose from {', '.join(PROFILES)}")
    if r.profile != "default" and r.shapes:  # each profile is its own set of cases
        raise UsageError(
            f"profile {r.profile} checks its own cases of the default grid; give shape or profile, not both"
        )
    if r.device != "cpu" and not r.device.startswith("cuda"):
        raise UsageError(f"unknown device {r.device!r}; choose from cpu, cuda")
    if (r.backward is not None or r.style is not None) and r.impl is None:
        raise UsageError("--backward and --style describe an --impl; give --impl too")
    _ints(r.groups, "groups")
    _ints(r.normalized_ndim, "normalized_ndim")
    if (r.groups is not None or r.normalized_ndim is not None) and not r.shapes:
        what = "groups" if r.groups is not None else "normalized_ndim"
        raise UsageError(
            f"{what} applies to the shapes given with shape; give shape too (the default grid chooses its own)"
        )
    for shape in r.shapes or ():
        reason = memory_problem(_shape(shape))
        if reason:
            raise UsageError(reason)
    parse_shard(r.shard)
    _check_binding(r)
    _check_variant(r)
    if r.world_size is not None:
        parse_world_sizes(r.world_size)
        if choose(items(r.ops), OP_NAMES, "op", ()) != ("bn",):
            raise UsageError("--world-size runs distributed batch norm: give --op bn (and no other op)")


def _check_binding(r: Request) -> None:
    """--layout and --param-shape: a known value, and an --impl (a function) to apply to."""
    from normcheck.user.binding import LAYOUTS, PARAM_SHAPES

    if r.layout is not None and r.layout not in LAYOUTS:
        raise UsageError(f"unknown layout {r.layout!r}; choose from {', '.join(LAYOUTS)}")
    if r.param_shape not in PARAM_SHAPES:
        raise UsageError(f"unknown param shape {r.param_shape!r}; choose from {', '.join(PARAM_SHAPES)}")
    if (r.layout is not None or r.param_shape != "flat") and r.impl is None:
        raise UsageError("--layout and --param-shape describe a function given with --impl; give --impl too")


def _check_variant(r: Request) -> None:
    """A --variant every op asked for has; the profiles cover the plain ops only."""
    ops = choose(items(r.ops), ALL_OP_NAMES, "op", ())
    fused = [op for op in ops if op in FUSED_BASE]
    if r.profile != "default" and (r.variant is not None or fused):
        what = f"variant {r.variant}" if r.variant is not None else f"op {fused[0]}"
        raise UsageError(f"profile {r.profile} covers the five plain ops; check {what} with the default profile")
    if r.variant is None:
        return
    if not ops and r.impl is None:
        raise UsageError(f"--variant {r.variant} needs --op: the ops that have it")
    for op in ops:
        reason = OPS[op].variant_problem(OpParams(variant=r.variant))
        if reason:
            raise UsageError(reason)


def _check_frameworks(r: Request) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the frameworks checked, the --against baseline), each installed."""
    from normcheck import frameworks as registry

    fw_names = choose(items(r.frameworks), registry.FRAMEWORKS, "framework", ())
    baseline = choose(r.against, registry.FRAMEWORKS, "framework", ())
    if len(baseline) > 1:
        raise UsageError("--against takes one framework")
    if r.world_size is not None and any(n != "torch" for n in fw_names):
        raise UsageError("--world-size runs batch norm over torch.distributed: only with framework torch")
    if r.world_size is not None and baseline:
        raise UsageError("--against compares frameworks in one process; it cannot be combined with --world-size")
    if r.world_size is not None and r.impl is None and not fw_names:
        fw_names = ("torch",)
    if r.impl is not None:
        if len(fw_names) > 1:
            raise UsageError("with --impl, --framework names the one framework a function is written for")
        names: tuple[str, ...] = ()
    else:
        names = fw_names or tuple(registry.installed())
        if not names:
            raise UsageError(
                "no framework is installed; pip install 'normcheck[torch]' (or tensorflow, jax, onnxruntime)"
            )
    for name in (*names, *baseline):
        if not registry.is_installed(name):
            extra = registry.FRAMEWORKS[name].extra
            raise UsageError(f"framework {name!r} is not installed; pip install 'normcheck[{extra}]'")
    return names, baseline


def _refuse_invalid_cases(opts: Options) -> None:
    problems = invalid_cases(opts)
    if problems:
        raise UsageError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def named(request: Request, error: UsageError) -> UsageError:
    """A config check's usage error, prefixed with the check's name."""
    return UsageError(f"{request.name}: {error}") if request.name else error


def options(r: Request, ops: tuple[OpName, ...]) -> Options:
    """The plan's options for ``r`` checking ``ops`` (flags parsed; nothing loaded)."""
    dtype_text = items(r.dtypes)
    return Options(
        ops=ops,
        dtypes=choose(dtype_text, DTYPE_NAMES, "dtype", DEFAULT_DTYPES),
        shapes=tuple(_shape(s) for s in r.shapes or ()),
        groups=_ints(r.groups, "groups"),
        normalized_ndim=_ints(r.normalized_ndim, "normalized_ndim"),
        kinds=choose(items(r.kinds), KIND_NAMES, "input kind", KIND_NAMES),
        device=r.device,
        seed=r.seed,
        tolerance=None if r.rtol is None or r.atol is None else (r.rtol, r.atol),  # validate: both or neither
        explicit_dtypes=bool(split_list(dtype_text)),
        eps=r.eps,
        momentum=r.momentum,
        shard=parse_shard(r.shard),
        timeout=r.timeout,
        profile=r.profile,
        variant=r.variant,
        world_sizes=parse_world_sizes(r.world_size),
    )


def prepare(request: Request) -> Prepared:
    """Validate ``request``, load what it names and plan it, in this process (a worker's job:
    this imports frameworks and the user's code). UsageError for anything the user must fix."""
    from normcheck import frameworks as registry

    names, baseline = validate(request)
    ops, user_fws, load_rows = _ops_and_user_code(request)
    loaded = {name: registry.load(name) for name in dict.fromkeys((*names, *baseline))}
    if request.world_size is not None and "torch" in loaded:  # nn.SyncBatchNorm over torch.distributed
        from normcheck.frameworks.torch.distributed import DistributedFramework

        loaded["torch"] = DistributedFramework()
    fws = [loaded[n] for n in names] + user_fws
    against = loaded[baseline[0]] if baseline else None
    for fw in fws + ([against] if against is not None else []):
        reason = fw.device_problem(request.device)
        if reason:
            raise UsageError(f"--device {request.device}: {reason}")
    opts = replace(options(request, ops), against=against)
    units = plan(opts, fws)
    _refuse_unimplemented_fused(ops, units, fws, load_rows)
    return Prepared(request, opts, fws, units, load_rows)


def _refuse_unimplemented_fused(
    ops: tuple[OpName, ...], units: list[Unit], fws: list[Framework], load_rows: list[CheckResult]
) -> None:
    """A fused op no framework asked for has (most have none built in) is a usage error, not an
    empty run that passes."""
    for op in ops:
        if op in FUSED_BASE and not load_rows and not any(u.op == op for u in units):
            names = ", ".join(fw.name for fw in fws) or "none"
            raise UsageError(
                f"no framework checked has {op} built in ({names}); onnxruntime has, or check your own with --impl"
            )


def _ops_and_user_code(r: Request) -> tuple[tuple[OpName, ...], list[Framework], list[CheckResult]]:
    """The ops checked, the frameworks holding the user's implementation (loaded here) and the
    rows for what of it could not be loaded."""
    if r.impl is None:
        return choose(items(r.ops), ALL_OP_NAMES, "op", OP_NAMES), [], []
    if r.world_size is not None:
        return _distributed_user_code(r)
    from normcheck import frameworks as registry
    from normcheck.user.resolve import resolve_impl

    fw_names = choose(items(r.frameworks), registry.FRAMEWORKS, "framework", ())
    ops, user_fws, load_rows = resolve_impl(r, fw_names[0] if fw_names else None, split_list(items(r.ops)))
    _refuse_invalid_cases(options(r, ops))  # (validate checked the built-ins' ops)
    return ops, list[Framework](user_fws), load_rows


def _distributed_user_code(r: Request) -> tuple[tuple[OpName, ...], list[Framework], list[CheckResult]]:
    """``--impl`` with ``--world-size``: the user's distributed batch norm, loaded in each rank
    (by its spec; an object by its importable name), checked here for nothing but its name."""
    from normcheck.frameworks.torch.distributed import DistributedFramework
    from normcheck.user.resolve import impl_label

    if isinstance(r.impl, str):
        spec, label = r.impl, impl_label(r.impl)[1]
    else:
        module, label = getattr(r.impl, "__module__", None), getattr(r.impl, "__qualname__", "")
        if not module or not label or "<" in label:
            raise UsageError("with --world-size, --impl must be FILE.py:NAME or an importable class or function")
        spec = f"{module}:{label}"
    return ("bn",), [DistributedFramework(spec, label)], []


def merge_reports(reports: list[Report], strict: bool = False) -> Report:
    """One report for several requests (a config's checks): results in order, counts summed."""
    if len(reports) == 1:
        return reports[0]
    results = [r for rep in reports for r in rep.results]
    summary: dict[str, Any] = {s: sum(rep.summary.get(s, 0) for rep in reports) for s in (*STATUSES, "cases")}
    summary["seconds"] = round(sum(rep.summary.get("seconds", 0.0) for rep in reports), 2)
    summary["translations"] = list(dict.fromkeys(t for rep in reports for t in rep.summary.get("translations", ())))
    summary["checks"] = [rep.summary.get("name", "") for rep in reports]
    interrupted = any(rep.interrupted for rep in reports)
    if interrupted:
        summary["interrupted"] = True
    return Report(results, summary, strict, interrupted)
