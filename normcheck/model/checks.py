"""Per-layer checks of a model, framework-free: what a layer's check needs (LayerSetup), its
Problem on the captured activation or on a hostile input kind, and the judging of what the layer
itself returned, with verify's own tolerance rule, diagnosis and records.

Runs in the worker (normcheck.model.check_task), next to the model: a layer's activation is
never sent to the parent, only the records of its checks. The framework parts
(normcheck.model.torch_checks, normcheck.model.onnx_checks) capture the activations and run the
layers; this module builds the problems and judges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np

from normcheck.dtypes import quantize
from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.names import DTYPE_NAMES, DtypeName, InputKind, OpName
from normcheck.ops import OPS, OpParams
from normcheck.problem import Problem, case_seed
from normcheck.verify.inputs import make_problem
from normcheck.verify.plan import Options
from normcheck.verify.records import ERROR, FAIL, PASS, RUN, SKIP, Case, CheckResult

CAPTURED = "captured"  # the input kind of a check on the layer's real activation
HOSTILE_KINDS: tuple[str, ...] = ("large_mean", "tiny_scale", "constant", "half_range")
MODEL_KINDS: tuple[str, ...] = (CAPTURED, *HOSTILE_KINDS, "normal")  # what --kinds accepts
DEFAULT_KINDS: tuple[str, ...] = (CAPTURED, *HOSTILE_KINDS)
HOSTILE_LIMIT = 1 << 16  # elements of a hostile input at most: its shape is the layer's, cut down
OPTIONS = Options(ops=(), dtypes=())  # verify's defaults: the dtype tolerance table, diagnosis on


def as_kind(kind: str) -> InputKind:
    """The input kind as a Case holds it ("captured" is the model command's own)."""
    return cast(InputKind, kind)


@dataclass(frozen=True)
class LayerSetup:
    """What a layer computes, as normcheck's reference needs it: read from the layer itself."""

    op: OpName
    params: OpParams
    eps: float
    dtype: DtypeName
    momentum: float = 0.1  # the weight of the new batch (PyTorch's meaning)
    weight: np.ndarray | None = None  # float64, exact in dtype, as the layer applies it (Gemma: 1 + w)
    bias: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    unbiased_running_var: bool = True
    missing: dict[str, str] = field(default_factory=dict)  # checks the layer cannot give, and why
    drop: tuple[str, ...] = ()  # checks not made at all (ONNX: running statistics, which are inputs)
    notes: tuple[str, ...] = ()
    # the framework implementation the layer is (ONNX Runtime's fused op: "onnx.GroupNormalization"),
    # whose documented defects make a reproduced failure "known"; None for the user's own code
    known_impl: str | None = None
    # a layer norm over the channels (axis 1) of an (N, C, ...) tensor, such as ConvNeXt's LayerNorm2d:
    # checked as a layer norm over the last axis of the tensor with axis ``moved_axis`` moved last
    moved_axis: int | None = None


def to_reference_layout(a: np.ndarray, setup: LayerSetup) -> np.ndarray:
    """The layer's tensor as the reference takes it (its normalized axis moved last, if any)."""
    return a if setup.moved_axis is None else np.moveaxis(a, setup.moved_axis, -1)


def dtype_name(name: str) -> DtypeName | None:
    return next((d for d in DTYPE_NAMES if d == name), None)


def case_for(path_label: str, framework: str, setup: LayerSetup, shape: tuple[int, ...], kind: str) -> Case:
    return Case(setup.op, framework, path_label, tuple(shape), setup.params, setup.dtype, as_kind(kind))


def error_row(case: Case, message: str) -> CheckResult:
    return CheckResult(case, RUN, ERROR, message=message)


def skip_row(case: Case, message: str) -> CheckResult:
    return CheckResult(case, RUN, SKIP, message=message)


def layer_row(
    impl: str, framework: str, status: str, message: str, op: OpName | None = None, dtype: str | None = None
) -> CheckResult:
    """The one row of a layer that is not checked (a candidate left unconfirmed, a layer never
    called, one whose op normcheck cannot run): skip or error, never a failing verdict."""
    d = dtype_name(dtype or "")
    case = Case(op or "-", framework, impl, (), OpParams(), d or "-", "-")
    return CheckResult(case, RUN, ERROR if status == ERROR else SKIP, message=message)


def _frozen(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def captured_problem(setup: LayerSetup, x: np.ndarray, seed: int, path: str) -> Problem:
    """The layer's real activation as x, its own weights and statistics, a seeded dy."""
    shape = tuple(int(n) for n in x.shape)
    rng = np.random.default_rng(case_seed(seed, "model", path, CAPTURED))
    dy = quantize(rng.standard_normal(shape), setup.dtype)
    xq = quantize(np.asarray(x, dtype=np.float64), setup.dtype)  # exact already: it is the layer's input
    return Problem(
        op=setup.op,
        shape=shape,
        params=setup.params,
        dtype=setup.dtype,
        kind=as_kind(CAPTURED),
        eps=setup.eps,
        momentum=setup.momentum,
        x=_frozen(xq),  # type: ignore[arg-type]
        dy=_frozen(dy),  # type: ignore[arg-type]
        weight=_frozen(setup.weight),
        bias=_frozen(setup.bias),
        running_mean=_frozen(setup.running_mean),
        running_var=_frozen(setup.running_var),
        unbiased_running_var=setup.unbiased_running_var,
    )


def hostile_problem(setup: LayerSetup, shape: tuple[int, ...], kind: str, seed: int, path: str) -> Problem:
    """verify's hostile input ``kind`` at ``shape`` (the layer's, cut down by hostile_shape), with
    the layer's own weights and statistics (no training steps before x: its state is as it is)."""
    base = make_problem(
        setup.op,
        shape,
        setup.params,
        setup.dtype,
        as_kind(kind),
        setup.eps,
        setup.momentum,
        case_seed(seed, "model", path),
        setup.unbiased_running_var,
    )
    return replace(
        base,
        weight=_frozen(setup.weight),
        bias=_frozen(setup.bias),
        steps=(),
        running_mean=_frozen(setup.running_mean),
        running_var=_frozen(setup.running_var),
    )


def hostile_shape(op: OpName, shape: tuple[int, ...], params: OpParams, limit: int = HOSTILE_LIMIT) -> tuple[int, ...]:
    """The layer's shape, cut down to at most ``limit`` elements without changing what a statistic
    runs over where that can be kept: the batch first (to 2), then the largest of the axes the
    statistics do not need whole (spatial axes of batch, instance and group norm; leading axes of
    layer and RMS norm), halved in turn. A statistic keeps at least 2 values where it had them."""
    dims = list(shape)
    if op in ("ln", "rms"):
        k = params.normalized_ndim or 1
        free = list(range(0, len(dims) - k))
    else:
        free = [0, *range(2, len(dims))]

    def size() -> int:
        return int(np.prod(dims, dtype=np.int64))

    if dims and 0 in free and dims[0] > 2 and size() > limit:
        dims[0] = 2
    while size() > limit:
        candidates = [a for a in free if dims[a] > 2 or (a == 0 and dims[a] > 1)]
        if not candidates:
            break
        a = max(candidates, key=lambda i: dims[i])
        dims[a] = max(2 if a != 0 else 1, dims[a] // 2)
    if OPS[op].validate(tuple(dims), params):  # e.g. batch norm in training with one value per channel
        return tuple(shape)
    return tuple(dims)


def judge_run(case: Case, problem: Problem, setup: LayerSetup, out: RunOutput) -> list[CheckResult]:
    """The layer's outputs against the float64 reference: verify's tolerance, diagnosis, records."""
    from normcheck.verify.judge import Truth, judge, with_diagnosis

    truth = Truth.of(problem)
    if truth.unheld:
        return [skip_row(case, truth.unheld)]
    expected = {c: v for c, v in truth.expected.items() if c not in setup.drop}
    errs = {c: truth.witness_errs.get(c, 0.0) for c in expected}
    with np.errstate(all="ignore"):
        rows = judge(case, problem, out, expected, errs, OPTIONS, setup.missing)
        try:
            # the full truth: evaluation-mode predictions normalize with its running statistics,
            # judged or not (an ONNX layer takes them as inputs and returns none)
            rows = with_diagnosis(rows, problem, truth.expected, out)
        except Exception as e:  # a hypothesis that cannot model this case: the cause stays unknown
            note = f"cause unknown (the diagnosis failed: {describe_error(e)})"
            rows = [replace(r, message=f"{r.message}; {note}") if r.status == FAIL else r for r in rows]
        if setup.known_impl is not None and any(r.status == FAIL for r in rows):
            rows = _known(rows, case, problem, expected, out, setup.known_impl)
    return rows


def _known(
    rows: list[CheckResult], case: Case, problem: Problem, expected: dict[str, np.ndarray], out: RunOutput, impl: str
) -> list[CheckResult]:
    """Failures that a documented defect of the framework's implementation reproduces are known
    (verify's rule, confirm_known), judged as that implementation's rows."""
    from normcheck.frameworks import load
    from normcheck.verify.judge import confirm_known

    proxy = replace(case, impl=impl)
    judged = confirm_known([replace(r, case=proxy) for r in rows], problem, expected, out, load(case.framework).facts())
    return [replace(r, case=case) for r in judged]


def one_mistake(framework: str, setup: LayerSetup, x: np.ndarray, run: Callable[[Problem], RunOutput]) -> str | None:
    """The one known mistake that reproduces every failing check of a probe of ``setup`` on the
    captured input ``x`` (in the reference layout): a diagnosis with evidence over the whole case,
    not ambiguous, the forward run and judged. None where the reading fails otherwise, passes, or
    cannot run."""
    if OPS[setup.op].validate(tuple(x.shape), setup.params):
        return None
    problem = captured_problem(setup, x, 0, "probe")
    case = case_for("probe", framework, setup, problem.shape, CAPTURED)
    try:
        with np.errstate(all="ignore"):
            rows = judge_run(case, problem, setup, run(problem))
    except Exception:
        return None
    failing = [r for r in rows if r.status == FAIL]
    if not failing or any(r.status not in (PASS, FAIL) for r in rows if r.check == "forward"):
        return None
    found = [r.diagnosis for r in failing]
    sound = all(d is not None and d.hypothesis and d.scope == "case" and not d.ambiguous for d in found)
    causes = {d.hypothesis for d in found if d is not None}
    first = found[0]
    return first.cause if sound and len(causes) == 1 and first is not None else None


def model_raised(e: BaseException, last: list[str], inputs: str) -> UsageError:
    """The one line saying the model raised while it was captured, after which norm layer, on
    which ``inputs`` (described); Ctrl-C outside a worker is raised again, not described."""
    if isinstance(e, KeyboardInterrupt):
        from normcheck.engine import worker

        if not worker.IN_WORKER:
            raise e
    where = f" after its norm layer {last[-1]}" if last else " before reaching any norm layer"
    return UsageError(f"the model raised {describe_error(e)}{where}, on input {inputs}")


def describe_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass(frozen=True)
class ProbeVariant:
    """One reading of what a candidate computes, tried by the probe."""

    op: OpName
    eps: float
    params: OpParams
    one_plus: bool  # the weight applied as 1 + w (Gemma)
    label: str
    moved_axis: int | None = None  # layer norm over this axis (the channels), not the last


def forward_matches(setup: LayerSetup, x: np.ndarray, y: np.ndarray) -> bool:
    """Whether ``y`` is the reference forward of ``setup`` on ``x`` within verify's tolerance."""
    from normcheck.reference import reference
    from normcheck.verify.tolerance import compare, tolerance_for, witness_errors

    if y.shape != x.shape:
        return False
    problem = captured_problem(setup, x, 0, "probe")
    if OPS[setup.op].validate(problem.shape, setup.params):
        return False
    with np.errstate(all="ignore"):
        try:
            expected = reference(problem)
            errs = witness_errors(problem, expected)
        except ValueError:
            return False
        want = expected["forward"]
        if not np.all(np.isfinite(want)):
            return False
        tol = tolerance_for(setup.dtype, errs["forward"])
        return compare(y, want, tol).mismatched == 0


@dataclass(frozen=True)
class LayerRunner:
    """One layer of a loaded model, ready to run: what it computes (``setup``) and ``run``, which
    runs the layer itself (its own weights, statistics and mode) on a Problem held in the
    reference's layout (channels at axis 1 for batch, instance and group norm; the normalized axes
    last for layer and RMS norm). ``permutation`` takes the layer's own layout to the reference's
    (a channels-last batch norm: (0, 3, 1, 2)); None when they are the same. Each framework's check
    module makes these (``runner_for``); ``normcheck model`` checks them and ``normcheck port``
    runs a layer and its port on the same activation with them."""

    setup: LayerSetup
    run: Callable[[Problem], RunOutput]
    label: str  # the rows' implementation: "layer1.0.bn1 (torch.nn.BatchNorm2d)", with any probe result
    framework: str
    who: str = "the layer"  # who raised, when ``run`` raises
    permutation: tuple[int, ...] | None = None

    def to_reference(self, a: np.ndarray) -> np.ndarray:
        return a if self.permutation is None else np.transpose(a, self.permutation)

    def from_reference(self, a: np.ndarray) -> np.ndarray:
        return a if self.permutation is None else np.transpose(a, tuple(int(i) for i in np.argsort(self.permutation)))

    def rows(self, x: np.ndarray, kinds: tuple[str, ...], seed: int, path: str, calls: int = 1) -> list[CheckResult]:
        """The layer's rows on its captured input ``x`` (in its own layout) and the hostile kinds;
        ``calls``: how often the model called the layer (its first input is ``x``)."""
        label = self.label
        if calls > 1:
            label = with_note(label, f"called {calls} times: checked on its first input")
        return layer_rows(
            self.setup, self.to_reference(x), kinds, seed, path, label, self.framework, self.run, self.who
        )


def with_note(label: str, note: str) -> str:
    """``path (kind; notes)`` with ``note`` added to its parenthesis (or given one)."""
    if label.endswith(")") and " (" in label:
        return f"{label[:-1]}; {note})"
    return f"{label} ({note})"


def channels_last_permutation(ndim: int, channel_axis: int | None) -> tuple[int, ...] | None:
    """The permutation taking a tensor with its channels at ``channel_axis`` to channels at axis 1
    (None when they are there already, or the tensor has fewer than 3 axes)."""
    if channel_axis is None or ndim < 3:
        return None
    axis = channel_axis % ndim
    if axis == 1:
        return None
    rest = [a for a in range(ndim) if a not in (0, axis)]
    return (0, axis, *rest)


def layer_rows(
    setup: LayerSetup,
    x: np.ndarray,
    kinds: tuple[str, ...],
    seed: int,
    path: str,
    label: str,
    framework: str,
    run: Callable[[Problem], RunOutput],
    who: str,
) -> list[CheckResult]:
    """One layer's rows for each input kind: its captured activation ``x`` (in the reference's
    layout) and the hostile kinds at its shape. ``run`` runs the layer on a problem; an exception
    it raises is an error row saying ``who`` raised it."""
    rows: list[CheckResult] = []
    for kind in kinds:
        if kind == CAPTURED:
            problem = captured_problem(setup, x, seed, path)
        else:
            problem = hostile_problem(setup, hostile_shape(setup.op, tuple(x.shape), setup.params), kind, seed, path)
        case = case_for(label, framework, setup, problem.shape, kind)
        invalid = OPS[setup.op].validate(problem.shape, setup.params)
        if invalid:
            rows.append(skip_row(case, invalid))
            continue
        try:
            with np.errstate(all="ignore"):
                out = run(problem)
        except Exception as e:
            rows.append(error_row(case, f"{who} raised {describe_error(e)}"))
            continue
        rows.extend(judge_run(case, problem, setup, out))
    return rows
