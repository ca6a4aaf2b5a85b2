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
    ADAPTIVE_OP_NAMES,
    ALL_OP_NAMES,
    DEFAULT_DTYPES,
    DEFAULT_TIMEOUT,
    DTYPE_NAMES,
    KIND_NAMES,
    OP_NAMES,
    STRESS_KIND_NAMES,
    VERIFY_PROFILES,
    WS_OP_NAMES,
    DtypeName,
    InputKind,
    OpName,
)
from normcheck.ops import FUSED_BASE, OPS, OpParams
from normcheck.parsing import choose, parse_ints, parse_shape, split_list
from normcheck.verify.distributed import parse_world_sizes
from normcheck.verify.plan import Options, Unit, invalid_cases, plan
from normcheck.verify.records import ERROR, FAIL, KNOWN, STATUSES, CheckResult
from normcheck.verify.stress_cases import STRESS, STRESS_OPS

if TYPE_CHECKING:
    import pandas as pd

    from normcheck.ops.quantize import Quantization


ListLike = str | Sequence[str] | None


@dataclass(frozen=True)
class Request:
    """What to verify, as given: lists as comma strings or sequences, None for the defaults."""

    ops: ListLike = None
    frameworks: ListLike = None
    shapes: Sequence[str | Sequence[int]] = ()
    groups: str | int | Sequence[int] | None = None
    normalized_ndim: str | int | Sequence[int] | None = None
    # layer norm over these axes (each set a comma string or ints; several sets in a sequence)
    axes: str | int | Sequence[int] | Sequence[str | Sequence[int]] | None = None
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
    policy: str | None = None  # a named precision policy the forward is held to (normcheck.policies)
    quantize: str | None = None  # the output quantized to FP8: e4m3 or e5m2 (normcheck.ops.quantize)
    scale: str | None = None  # with quantize, its scale: row (the default), tensor or static


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


def axes_sets(value: str | int | Sequence[int] | Sequence[str | Sequence[int]] | None) -> tuple[tuple[int, ...], ...]:
    """The axes sets of a request: ``1``, ``"1,2,3"`` or ``(1, 2, 3)`` is one set, a sequence of
    strings or of sequences is several (``--axes 1 --axes 1,2,3``). Negative axes count from the end."""
    if value is None:
        return ()
    if isinstance(value, bool) or not isinstance(value, int | str | Sequence):
        raise UsageError(f"axes takes an integer, a comma list or a sequence of them, not {type(value).__name__}")
    given: Sequence[object] = (
        [value] if isinstance(value, int | str) or all(isinstance(v, int) for v in value) else value
    )
    sets = []
    for one in given:
        if isinstance(one, bool) or not isinstance(one, int | str | Sequence):
            raise UsageError(f"malformed axes {one!r}; write a comma list of integers, e.g. 1 or 1,2,3")
        text = str(one) if isinstance(one, int | str) else ",".join(map(str, one))
        try:
            axes = tuple(int(a) for a in split_list(text))
        except ValueError:
            raise UsageError(f"malformed axes {text!r}; write a comma list of integers, e.g. 1 or 1,2,3") from None
        if not axes:
            raise UsageError("axes is empty; give the axes to normalize, e.g. 1 (the channels of NCHW)")
        sets.append(axes)
    return tuple(dict.fromkeys(sets))


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
    if r.profile not in VERIFY_PROFILES:
        raise UsageError(f"unknown profile {r.profile!r}; choose from {', '.join(VERIFY_PROFILES)}")
    if r.profile != "default" and r.shapes:  # each profile is its own set of cases
        raise UsageError(
            f"profile {r.profile} checks its own cases{'' if r.profile == STRESS else ' of the default grid'}; "
            "give shape or profile, not both"
        )
    if r.profile == STRESS:
        _check_stress(r)
    if r.device != "cpu" and not r.device.startswith("cuda"):
        raise UsageError(f"unknown device {r.device!r}; choose from cpu, cuda")
    if (r.backward is not None or r.style is not None) and r.impl is None:
        raise UsageError("--backward and --style describe an --impl; give --impl too")
    _ints(r.groups, "groups")
    _ints(r.normalized_ndim, "normalized_ndim")
    _check_axes(r)
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
    _check_quantize(r)
    _check_policy(r, choose(items(r.ops), ALL_OP_NAMES, "op", ()))
    if r.world_size is not None:
        parse_world_sizes(r.world_size)
        if choose(items(r.ops), OP_NAMES, "op", ()) != ("bn",):
            raise UsageError("--world-size runs distributed batch norm: give --op bn (and no other op)")


def _check_axes(r: Request) -> None:
    """--axes: layer norm's (--op ln, or an --impl that is one), not with --normalized-ndim or a profile."""
    if not axes_sets(r.axes):
        return
    ops = choose(items(r.ops), ALL_OP_NAMES, "op", ())
    if (ops and ops != ("ln",)) or (not ops and r.impl is None):
        raise UsageError("--axes says which axes layer norm normalizes: give --op ln (and no other op)")
    if r.normalized_ndim is not None:
        raise UsageError("give --axes or --normalized-ndim, not both (trailing axes are what --normalized-ndim counts)")
    if r.profile != "default":
        raise UsageError(
            f"profile {r.profile} checks its own cases of the default grid; give axes or profile, not both"
        )


def _check_stress(r: Request) -> None:
    """--profile stress: ops it has cases of (the fused add + norms too), in one process."""
    for op in choose(items(r.ops), ALL_OP_NAMES, "op", ()):
        if op not in STRESS_OPS:
            raise UsageError(f"profile stress has no cases of {op}; its ops: {', '.join(STRESS_OPS)}")
    if r.world_size is not None:
        raise UsageError("profile stress runs in one process; check --world-size with the default profile")


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
    named_only = (*ADAPTIVE_OP_NAMES, *WS_OP_NAMES, *(() if r.profile == STRESS else FUSED_BASE))
    fused = [op for op in ops if op in named_only]  # the stress profile has cases of the fused add + norms
    if r.profile != "default" and (r.variant is not None or fused):
        what = f"variant {r.variant}" if r.variant is not None else f"op {fused[0]}"
        raise UsageError(f"profile {r.profile} covers the five plain ops; check {what} with the default profile")
    check_variant(r.variant, ops, r.impl is not None)


def check_variant(variant: str | None, ops: tuple[str, ...], has_impl: bool) -> None:
    """A --variant every op asked for has (verify's and bench's rule); with --impl and no --op, the
    op its name gives is checked once loaded."""
    if variant is None:
        return
    if not ops and not has_impl:
        raise UsageError(f"--variant {variant} needs --op: the ops that have it")
    for op in ops:
        reason = OPS[op].variant_problem(OpParams(variant=variant))
        if reason:
            raise UsageError(reason)


def _check_policy(r: Request, ops: tuple[str, ...]) -> None:
    """--policy: a known policy that covers every op asked for (and the variant); with --impl and
    no --op, ``prepare`` checks it on the op the implementation's name gives."""
    if r.policy is None:
        return
    from normcheck.verify.policy import policy_problem

    if r.profile != "default":
        raise UsageError(f"profile {r.profile} covers the plain checks; check a policy with the default profile")
    if r.quantize is not None:
        raise UsageError("--policy holds the output in its own dtype; it cannot be combined with --quantize")
    problem = policy_problem(r.policy, ops, r.variant) if ops or r.impl is None else None
    if problem:
        raise UsageError(problem)


def _check_quantize(r: Request) -> None:
    """--quantize and --scale (check_fp8), and what they cannot be combined with."""
    check_fp8(r.quantize, r.scale, choose(items(r.ops), ALL_OP_NAMES, "op", ()))
    if r.quantize is None:
        return
    if r.against is not None:
        raise UsageError(
            "--against compares frameworks' own outputs; FP8-quantized output is checked against the reference only"
        )
    if r.profile != "default":
        raise UsageError(f"profile {r.profile} covers the plain ops; check --quantize with the default profile")


def check_fp8(quantize: str | None, scale: str | None, ops: tuple[str, ...]) -> None:
    """--quantize and --scale (verify's and bench's rule): known values, for ops with a quantized form."""
    from normcheck.ops.quantize import FORMATS, QUANTIZED_OPS, SCALE_MODES

    if quantize is None:
        if scale is not None:
            raise UsageError("--scale says how an FP8-quantized output is scaled: give --quantize too")
        return
    if quantize not in FORMATS:
        raise UsageError(f"unknown FP8 format {quantize!r}; choose from {', '.join(FORMATS)}")
    if scale is not None and scale not in SCALE_MODES:
        raise UsageError(f"unknown scale {scale!r}; choose from {', '.join(SCALE_MODES)}")
    if not ops:
        raise UsageError(f"--quantize needs --op: the op whose output is quantized ({', '.join(QUANTIZED_OPS)})")
    for op in ops:
        if op not in QUANTIZED_OPS:
            raise UsageError(
                f"--quantize: {OPS[op].title} ({op}) has no FP8-quantized form; the ops with one: "
                f"{', '.join(QUANTIZED_OPS)}"
            )


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
    ops = choose(items(r.ops), ALL_OP_NAMES, "op", ())
    if ops and set(ops) <= set(WS_OP_NAMES) and r.impl is None and not fw_names and registry.is_installed("torch"):
        fw_names = ("torch",)  # Weight Standardization: only torch's adapter has it (timm's composition)
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
        dtypes=choose(dtype_text, DTYPE_NAMES, "dtype", _default_dtypes(r)),
        shapes=tuple(_shape(s) for s in r.shapes or ()),
        groups=_ints(r.groups, "groups"),
        normalized_ndim=_ints(r.normalized_ndim, "normalized_ndim"),
        axes=axes_sets(r.axes),
        kinds=choose(items(r.kinds), _kinds(r), "input kind", _kinds(r)),
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
        policy=r.policy,
        quant=_quantization(r),
    )


def _kinds(r: Request) -> tuple[InputKind, ...]:
    """The input kinds a request may name and checks by default: the stress profile's own too."""
    return KIND_NAMES + STRESS_KIND_NAMES if r.profile == STRESS else KIND_NAMES


def _quantization(r: Request) -> Quantization | None:
    """The request's FP8 quantization (validated by ``_check_quantize``), or None."""
    if r.quantize is None:
        return None
    from normcheck.ops.quantize import ROW, Quantization

    return Quantization(r.quantize, r.scale or ROW)


def _default_dtypes(r: Request) -> tuple[DtypeName, ...]:
    """The dtypes checked when none are named: all four, or those a --policy is checked in."""
    if r.policy is None:
        return DEFAULT_DTYPES
    from normcheck.verify.policy import default_dtypes

    return default_dtypes(r.policy)


def prepare(request: Request, whole: bool = True) -> Prepared:
    """Validate ``request``, load what it names and plan it, in this process (a worker's job:
    this imports frameworks and the user's code). UsageError for anything the user must fix.
    ``whole``: the request is the user's whole run, not one framework's part of it (a part may
    lack an op the others have: the parent refuses an op no part planned, ``refuse_unplanned``)."""
    from normcheck import frameworks as registry

    names, baseline = validate(request)
    ops, user_fws, load_rows = _ops_and_user_code(request)
    _check_policy(request, ops)  # (validate could not, with --impl and no --op)
    if axes_sets(request.axes) and ops != ("ln",):  # (nor this, for an op inferred from --impl)
        raise UsageError(f"--axes says which axes layer norm normalizes; {', '.join(ops)} is not layer norm")
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
    if whole:
        refuse_unplanned(ops, {u.op for u in units}, [fw.name for fw in fws], bool(load_rows), opts.quant is not None)
    return Prepared(request, opts, fws, units, load_rows)


def refuse_unplanned(
    ops: tuple[OpName, ...], planned: set[str], frameworks: list[str], load_rows: bool, quantized: bool = False
) -> None:
    """A fused op (or adaLN, or Weight Standardization, or an FP8-quantized output) none of
    ``frameworks`` has (most have none built in) is a usage error, not an empty run that passes."""
    if quantized and not planned and not load_rows:
        raise UsageError(
            f"no framework checked has a norm with FP8-quantized output built in ({', '.join(frameworks) or 'none'}); "
            "onnxruntime has (the norm, then QuantizeLinear), or check your own with --impl"
        )
    for op in ops:
        named_only = op in FUSED_BASE or op in ADAPTIVE_OP_NAMES or op in WS_OP_NAMES
        if named_only and not load_rows and op not in planned:
            names = ", ".join(frameworks) or "none"
            if frameworks and all(name == "user" for name in frameworks) and op in ADAPTIVE_OP_NAMES:
                raise UsageError(
                    f"{op} is checked as a function fn(x, shift, scale, eps) of PyTorch, TensorFlow or JAX, or a "
                    "module called (x, shift, scale) (nn.Module, Keras layer, flax.linen.Module)"
                )
            raise UsageError(
                f"no framework checked has {op} built in ({names}); {builtin_owner(op)}, or check your own with --impl"
            )


def builtin_owner(op: str) -> str:
    """Which framework has ``op`` built in, for the fused ops, adaLN and Weight Standardization."""
    if op in ADAPTIVE_OP_NAMES:
        return "torch has (DiT's modulate over F.layer_norm)"
    if op in WS_OP_NAMES:
        return "torch has (timm's StdConv2d: F.batch_norm over the weight, F.conv2d)"
    if op in FUSED_BASE:
        return "onnxruntime has"
    return "every framework has"


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
