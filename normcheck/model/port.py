"""``normcheck port``: a port compared with its source, norm layer by norm layer.

Both models are inventoried (each in its own worker, normcheck.model.run.take_inventory), their
norm layers paired (normcheck.model.pairing) and each pair's configurations compared after the
frameworks' conventions are translated (normcheck.conventions / porting): eps (with any floor a
framework applies), momentum in PyTorch's meaning, the layout and channel axis, the group order
under channels-last, the op and its groups, affine, running statistics and their variance
convention, the mode, the variance's form, dtype, and the weights' summaries.

Every difference is a Finding with a severity:

- ``error``: the port computes another output in inference (eps that moves the output by more
  than the dtype's tolerance at the layer's variance, other groups, another op, missing affine,
  other weights, a layer with no counterpart);
- ``warning``: differs in a way that can matter (momentum: only in training; eps whose effect is
  below the dtype's tolerance at the layer's typical variance but not at smaller ones; dtype;
  the mode the model was handed over in);
- ``info``: equivalent after translation (0.2 new-batch weight = 0.8 old-value weight; NCHW ↔
  NHWC; PyTorch's unbiased vs Keras's biased running-variance update, which copied statistics do
  not see).

Records only: nothing prints. A later step (per-layer checks on captured activations) adds its
findings to the same pairs with ``check="activation"`` (``PortPair.with_findings``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from normcheck.conventions import MACHINE_EPS, NEW, OLD
from normcheck.model.pairing import ONNX_FRAMEWORK, Pairing, pair_layers
from normcheck.model.records import CUMULATIVE, EVAL, FROZEN, ONE_PASS, PER_CALL, TRAIN, Inventory, NormLayer

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITY_RANK = {ERROR: 3, WARNING: 2, INFO: 1}
# a pair's status
EQUIVALENT, DIFFERS, UNPAIRED = "equivalent", "differs", "unpaired"
CONFIG, ACTIVATION = "config", "activation"  # what a finding comes from

# (rtol, atol) per dtype: torch.testing's defaults, as verify's tolerance table
DTYPE_RTOL = {"float64": 1e-7, "float32": 1.3e-6, "float16": 1e-3, "bfloat16": 1.6e-2}
# weights' summaries (min, max, mean) are the same when within this of each other: float32
# values copied exactly agree to the last bit; a mean summed in another order differs by ulps
SUMMARY_RTOL, SUMMARY_ATOL = 1e-5, 1e-7
SAME_EPS_RTOL = 1e-6  # ONNX keeps eps as float32: 1e-5 reads back as 9.99999974738e-06

FRAMEWORK_TITLES = {"torch": "PyTorch", "tensorflow": "Keras", "jax": "Flax", "onnxruntime": "ONNX"}
ROLE_TITLES = {
    "weight": "weight (γ)",
    "bias": "bias (β)",
    "running_mean": "running mean",
    "running_var": "running variance",
}


@dataclass(frozen=True)
class Finding:
    """One difference between a layer and its port, or one translation they agree after."""

    property: str  # "eps", "momentum", "layout", "group order", "op", "groups", "affine", "weights", ...
    severity: str  # ERROR, WARNING or INFO
    src: str  # the source's value, as text
    dst: str  # the port's value, as text
    rule: str  # the translation rule, or what to change
    detail: str = ""  # how much: "the output changes by 4.6e-4 (relative) at the running variance's mean 1.29"
    check: str = CONFIG  # CONFIG (from the inventories) or ACTIVATION (a later, measured step)

    def text(self) -> str:
        """'eps 1e-06 vs 0.001 (Keras's default epsilon=1e-3 left in; set epsilon=1e-06)'"""
        return f"{self.property} {self.src} vs {self.dst} ({self.rule})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "property": self.property,
            "severity": self.severity,
            "src_value": self.src,
            "dst_value": self.dst,
            "rule": self.rule,
            "detail": self.detail,
            "check": self.check,
        }


@dataclass(frozen=True)
class PortPair:
    """A source layer and its port (one of them None when unpaired), with what differs."""

    src: NormLayer | None
    dst: NormLayer | None
    paired_by: str  # "map", "name", "order", or "" when unpaired
    findings: tuple[Finding, ...] = ()

    @property
    def severity(self) -> str | None:
        """The worst finding's severity (None: no finding)."""
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=SEVERITY_RANK.__getitem__)

    @property
    def status(self) -> str:
        if self.src is None or self.dst is None:
            return UNPAIRED
        return DIFFERS if self.severity in (ERROR, WARNING) else EQUIVALENT

    @property
    def label(self) -> str:
        src = self.src.path if self.src is not None else "—"
        dst = self.dst.path if self.dst is not None else "—"
        return f"{src} <-> {dst}"

    def first(self) -> Finding | None:
        """The first finding of the worst severity."""
        worst = self.severity
        return next((f for f in self.findings if f.severity == worst), None)

    def with_findings(self, *findings: Finding) -> PortPair:
        return replace(self, findings=(*self.findings, *findings))

    def as_dict(self) -> dict[str, Any]:
        """One flat row: both layers' keys, the status, and the findings (as dicts)."""
        first = self.first()
        return {
            "src_path": None if self.src is None else self.src.path,
            "dst_path": None if self.dst is None else self.dst.path,
            "src_kind": None if self.src is None else self.src.kind,
            "dst_kind": None if self.dst is None else self.dst.kind,
            "op": _op_text(self.src, self.dst),
            "paired_by": self.paired_by or None,
            "status": self.status,
            "severity": self.severity,
            "first": None if first is None else first.text(),
            "findings": [f.as_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class PortComparison:
    """Every pair of two models' norm layers, in the source's order."""

    src: Inventory
    dst: Inventory
    pairs: tuple[PortPair, ...]
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        out = {EQUIVALENT: 0, DIFFERS: 0, UNPAIRED: 0}
        for p in self.pairs:
            out[p.status] += 1
        return out

    def severities(self) -> dict[str, int]:
        out = {ERROR: 0, WARNING: 0, INFO: 0}
        for p in self.pairs:
            for f in p.findings:
                out[f.severity] += 1
        return out

    def first_divergence(self) -> PortPair | None:
        """The first pair (in the source's order) whose outputs differ (an error), else the first
        with a warning; None when every pair is equivalent after translation."""
        for severity in (ERROR, WARNING):
            first = next((p for p in self.pairs if p.severity == severity), None)
            if first is not None:
                return first
        return None

    def failed(self, strict: bool = False) -> bool:
        """Errors fail; warnings too with ``strict``."""
        worst = {p.severity for p in self.pairs}
        return ERROR in worst or (strict and WARNING in worst)

    def summary(self) -> dict[str, Any]:
        first = self.first_divergence()
        finding = None if first is None else first.first()
        return {
            "src": self.src.summary(),
            "dst": self.dst.summary(),
            "pairs": len(self.pairs),
            "status": self.counts(),
            "findings": self.severities(),
            "first_divergence": None
            if first is None or finding is None
            else {
                "src_path": _path(first.src),
                "dst_path": _path(first.dst),
                **finding.as_dict(),
                "text": divergence_text(first),
            },
            "notes": list(self.notes),
        }

    def records(self) -> list[dict[str, Any]]:
        return [p.as_dict() for p in self.pairs]


def divergence_text(pair: PortPair) -> str:
    """'layer1.0.bn1 <-> layer1_0_bn1: eps 1e-05 vs 0.001 (Keras's default epsilon=1e-3 left in; set epsilon=1e-05)'"""
    finding = pair.first()
    return f"{pair.label}: {finding.text()}" if finding is not None else pair.label


def _path(layer: NormLayer | None) -> str | None:
    return None if layer is None else layer.path


def _op_text(src: NormLayer | None, dst: NormLayer | None) -> str:
    a, b = (None if x is None else (x.op or "?") for x in (src, dst))
    if a is None or b is None or a == b:
        return str(a or b)
    return f"{a}/{b}"


# ---- the comparison -------------------------------------------------------------------------

SUMMARY_NOTE = (
    "weights are compared by their summaries (shape, min, max, mean) within rtol {rtol:g}, atol {atol:g}: "
    "equal summaries do not prove equal values (channels in another order have the same ones)"
)
ORDER_NOTE = (
    "{n} pair(s) were made by order: each model's inventory is in {how}; where that is not the order the "
    "layers run in, pair them by name or with --map"
)
INVENTORY_ORDERS = {
    "torch": "module registration order (named_modules): the execution order unless forward calls them otherwise",
    "tensorflow": "the functional graph's (execution) order",
    "onnxruntime": "graph (execution) order",
    "jax": "the module's attribute (setup) or call (compact) order",
}


def compare_inventories(src: Inventory, dst: Inventory, mapping: dict[str, str] | None = None) -> PortComparison:
    """Pair the layers (UsageError for a --map naming a layer that is not there) and compare each pair."""
    pairings = pair_layers(src.layers, dst.layers, mapping)
    pairs = tuple(_compare_pairing(p, dst) for p in pairings)
    notes = [SUMMARY_NOTE.format(rtol=SUMMARY_RTOL, atol=SUMMARY_ATOL)]
    by_order = sum(1 for p in pairs if p.paired_by == "order")
    if by_order:
        orders = {src.framework, dst.framework}
        how = "; ".join(
            f"{FRAMEWORK_TITLES.get(fw, fw)}: {INVENTORY_ORDERS.get(fw, 'its own order')}" for fw in sorted(orders)
        )
        notes.append(ORDER_NOTE.format(n=by_order, how=how))
    return PortComparison(src, dst, pairs, tuple(notes))


FOLDED = (
    "no counterpart in the ONNX graph: an exporter's constant folding merges an eval-mode batch norm into the "
    "convolution before it (equivalent up to rounding); export with do_constant_folding=False to compare it"
)


def _compare_pairing(p: Pairing, dst: Inventory) -> PortPair:
    if p.src is None or p.dst is None:
        layer = p.src or p.dst
        assert layer is not None
        side = "the port" if p.src is not None else "the source"
        if p.src is not None and p.src.op == "bn" and dst.framework == ONNX_FRAMEWORK and p.src.mode in (EVAL, FROZEN):
            return PortPair(p.src, None, "", (Finding("pairing", WARNING, p.src.path, "—", FOLDED),))
        finding = Finding(
            "pairing",
            ERROR,
            "—" if p.src is None else layer.path,
            "—" if p.dst is None else layer.path,
            f"no counterpart in {side}: a norm layer {'missing from' if p.src is not None else 'added in'} the port, "
            "or one the names and the order did not pair (pair it with --map)",
        )
        return PortPair(p.src, p.dst, "", (finding,))
    return PortPair(p.src, p.dst, p.by, compare_layers(p.src, p.dst))


def compare_layers(src: NormLayer, dst: NormLayer) -> tuple[Finding, ...]:
    """What differs between a layer and its port after translating the frameworks' conventions."""
    out: list[Finding] = []
    out += _op(src, dst)
    out += _candidate(src, dst)
    out += _eps(src, dst)
    out += _momentum(src, dst)
    out += _running_stats(src, dst)
    out += _mode(src, dst)
    out += _layout(src, dst)
    out += _features(src, dst)
    out += _groups(src, dst)
    out += _affine(src, dst)
    out += _variance(src, dst)
    out += _dtype(src, dst)
    out += _weights(src, dst)
    return tuple(out)


def _fw(layer: NormLayer) -> str:
    return FRAMEWORK_TITLES.get(layer.framework, layer.framework)


def _g(x: float) -> str:
    return f"{x:.4g}"


def _convention(layer: NormLayer) -> Any:
    from normcheck.frameworks import CONVENTIONS

    if layer.op is None:
        return None
    return CONVENTIONS.get(layer.framework, {}).get(str(layer.op))


def _channels(layer: NormLayer) -> int | None:
    if layer.feature_shape:
        return layer.feature_shape[0] if len(layer.feature_shape) == 1 else None
    for role in ("weight", "bias", "running_mean"):
        p = layer.param(role)
        if p is not None and p.shape:
            return _squeeze(p.shape)[0] if len(_squeeze(p.shape)) == 1 else None
    return None


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(16, 1, 1) → (16,): ONNX's per-channel affine of an exported group norm."""
    out = list(shape)
    while len(out) > 1 and out[-1] == 1:
        out.pop()
    return tuple(out)


# -- op -----------------------------------------------------------------------------------------

OP_NAMES = {"bn": "batch norm", "ln": "layer norm", "in": "instance norm", "gn": "group norm", "rms": "RMS norm"}


def _op_name(layer: NormLayer) -> str:
    if layer.op == "gn" and layer.groups is not None:
        return f"group norm (G={layer.groups})"
    return OP_NAMES.get(str(layer.op), str(layer.op or "?"))


def _op(src: NormLayer, dst: NormLayer) -> list[Finding]:
    a, b = src.op, dst.op
    if a == b:
        return []
    if a is None or b is None:
        return [
            Finding(
                "op", WARNING, _op_name(src), _op_name(dst), "a candidate's op is guessed from its name; not confirmed"
            )
        ]
    ops = {a, b}
    gn = src if a == "gn" else dst
    if ops == {"gn", "in"}:
        channels = _channels(gn)
        if gn.groups is not None and channels is not None and gn.groups == channels:
            return [
                Finding(
                    "op",
                    INFO,
                    _op_name(src),
                    _op_name(dst),
                    "instance norm = group norm with G = C: the same statistics",
                )
            ]
        return [
            Finding(
                "op",
                ERROR,
                _op_name(src),
                _op_name(dst),
                "a different op: instance norm normalizes each channel alone, a group norm with G < C groups "
                "of channels together (G=1: all of them); port it as a group norm with the same G",
            )
        ]
    if ops == {"gn", "ln"} and gn.groups == 1:
        ln = dst if gn is src else src
        n_axes = len(ln.axes) if ln.axes is not None else len(ln.feature_shape or ())
        if n_axes >= 2:
            return [
                Finding(
                    "op",
                    WARNING,
                    _op_name(src),
                    _op_name(dst),
                    "a different op: the same statistics (every channel and position of a sample), but layer norm's "
                    "affine is per element, group norm's per channel: equal only when the layer norm's weight and bias "
                    "are constant over the positions; port it as a group norm with G=1",
                )
            ]
        return [
            Finding(
                "op",
                ERROR,
                _op_name(src),
                _op_name(dst),
                "a different op: group norm with G=1 normalizes over all channels and positions of a sample, "
                "this layer norm over the last axis only; port it as a group norm with G=1",
            )
        ]
    if ops == {"ln", "rms"}:
        rule = "a different op: RMS norm subtracts no mean (y = x / sqrt(mean(x²) + eps) · γ)"
    else:
        rule = "a different op: the statistics run over other axes"
    return [Finding("op", ERROR, _op_name(src), _op_name(dst), rule)]


def _candidate(src: NormLayer, dst: NormLayer) -> list[Finding]:
    users = [f"{side} {layer.path}" for side, layer in (("source", src), ("port", dst)) if not layer.confirmed]
    if not users:
        return []
    return [
        Finding(
            "layer",
            INFO,
            "built-in" if src.confirmed else "user layer (candidate)",
            "built-in" if dst.confirmed else "user layer (candidate)",
            f"{' and '.join(users)}: a user layer; its settings are read from its attributes, what it computes is not "
            "confirmed (the per-layer checks on activations will)",
        )
    ]


# -- eps ----------------------------------------------------------------------------------------


def _eps_value(layer: NormLayer) -> float | None:
    if layer.eps is None:
        return None
    if layer.eps == MACHINE_EPS:
        from normcheck.ops.rms_norm import default_eps

        try:
            return default_eps(layer.compute_dtype or layer.dtype or "float32")
        except ValueError:
            return default_eps("float32")
    return float(layer.eps)


def _eps_text(layer: NormLayer) -> str:
    if layer.eps == MACHINE_EPS:
        return f"machine eps ({_g(_eps_value(layer) or 0.0)})"
    return "?" if layer.eps is None else f"{float(layer.eps):g}"


def _floor(layer: NormLayer) -> float:
    conv = _convention(layer)
    return float(conv.eps_floor) if conv is not None and layer.confirmed else 0.0


def _same(a: float, b: float, rtol: float = SAME_EPS_RTOL) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def output_change(variance: float, eps_a: float, eps_b: float) -> float:
    """The relative change of the normalized output, |sqrt((v + a) / (v + b)) - 1|, at variance v."""
    return abs(math.sqrt((variance + eps_a) / (variance + eps_b)) - 1.0)


def variance_below(rtol: float, eps_a: float, eps_b: float) -> float:
    """The variance below which eps a instead of b changes the normalized output by more than rtol."""
    hi, lo = max(eps_a, eps_b), min(eps_a, eps_b)
    k = (1.0 + rtol) ** 2
    return max((hi - k * lo) / (k - 1.0), 0.0)


def _default_eps(layer: NormLayer) -> float | None:
    conv = _convention(layer)
    if conv is None or conv.eps == MACHINE_EPS:
        return None
    return float(conv.eps)


def _eps_rule(src: NormLayer, dst: NormLayer, e_src: float) -> str:
    want = f"{e_src:g}"
    keyword = "epsilon" if dst.framework in ("tensorflow", ONNX_FRAMEWORK) else "eps"
    dst_default = _default_eps(dst)
    if dst.eps not in (None, MACHINE_EPS) and dst_default is not None and _same(float(dst.eps), dst_default):
        src_default = _default_eps(src)
        if src_default is None or not _same(src_default, dst_default):
            return f"{_fw(dst)}'s default {keyword}={dst_default:g} left in; set {keyword}={want}"
    return f"set {keyword}={want} on the port"


def _eps(src: NormLayer, dst: NormLayer) -> list[Finding]:
    e_src, e_dst = _eps_value(src), _eps_value(dst)
    if e_src is None or e_dst is None:
        if e_src is None and e_dst is None:
            return []
        return [
            Finding(
                "eps",
                WARNING,
                _eps_text(src),
                _eps_text(dst),
                "eps unknown on one side (a candidate without an eps attribute?): not compared",
            )
        ]
    f_src, f_dst = max(e_src, _floor(src)), max(e_dst, _floor(dst))
    raw_same = _same(e_src, e_dst)
    if _same(f_src, f_dst):
        if raw_same:
            return []
        return [
            Finding(
                "eps",
                INFO,
                _eps_text(src),
                _eps_text(dst),
                f"the same after clamping: both normalize with eps {f_src:g} "
                "(an eps below a framework's floor is raised to it)",
            )
        ]
    clamped = [layer for layer, e, f in ((src, e_src, f_src), (dst, e_dst, f_dst)) if f != e]
    dtype = dst.compute_dtype or dst.dtype or src.compute_dtype or src.dtype or "float32"
    rtol = DTYPE_RTOL.get(dtype, DTYPE_RTOL["float32"])
    var = dst.param("running_var") if src.param("running_var") is None else src.param("running_var")
    if var is not None and var.mean is not None and var.min is not None and var.mean > 0:
        typical, low = var.mean, max(var.min, 0.0)
        change, worst = output_change(typical, f_dst, f_src), output_change(low, f_dst, f_src)
        detail = (
            f"the normalized output changes by {change:.2g} (relative) at the running variance's mean {_g(typical)}, "
            f"{worst:.2g} at its smallest {_g(low)}"
        )
    else:
        typical = 1.0
        change = worst = output_change(typical, f_dst, f_src)
        detail = (
            f"the normalized output changes by {change:.2g} (relative) at unit variance "
            "(no running variance to say more)"
        )
    below = variance_below(rtol, f_src, f_dst)
    detail += f"; by more than {dtype}'s rtol {rtol:g} wherever the variance is below {below:.3g}"
    rule = _eps_rule(src, dst, e_src)
    if clamped:
        rule += "; " + ", ".join(f"{_fw(layer)} raises eps below {_floor(layer):g} to it" for layer in clamped)
    severity = ERROR if max(change, worst) > rtol else WARNING
    return [Finding("eps", severity, _eps_text(src), _eps_text(dst), rule, detail)]


# -- momentum and running statistics -------------------------------------------------------------


def _momentum_text(layer: NormLayer) -> str:
    if layer.momentum_weights == CUMULATIVE:
        return "None (cumulative average)"
    if layer.momentum is None:
        return "?"
    what = {NEW: "new batch", OLD: "old value"}.get(layer.momentum_weights or "", "?")
    return f"{layer.momentum:g} (weight of the {what})"


def _onnx_inference(layer: NormLayer) -> bool:
    return layer.framework == ONNX_FRAMEWORK and layer.mode in (EVAL, FROZEN)


def _momentum(src: NormLayer, dst: NormLayer) -> list[Finding]:
    if not (src.running_stats and dst.running_stats):
        return []
    if any(layer.momentum_weights is None and layer.momentum is None for layer in (src, dst)):
        return []
    a, b = _momentum_text(src), _momentum_text(dst)
    onnx = [layer for layer in (src, dst) if _onnx_inference(layer)]
    if onnx:
        return [
            Finding(
                "momentum",
                INFO,
                a,
                b,
                "not used: an ONNX BatchNormalization in inference mode (training_mode=0) never updates the running "
                "statistics; compared only when both sides can train",
            )
        ]
    w_src, w_dst = src.new_batch_weight, dst.new_batch_weight
    if w_src is None or w_dst is None:
        if src.momentum_weights == dst.momentum_weights:
            return []
        return [
            Finding(
                "momentum",
                WARNING,
                a,
                b,
                "one side averages cumulatively (PyTorch momentum=None): the running statistics differ after training",
            )
        ]
    if _same(w_src, w_dst, 1e-6):
        if src.momentum_weights == dst.momentum_weights:
            return []
        return [
            Finding(
                "momentum",
                INFO,
                a,
                b,
                f"the same weight of the new batch ({w_src:g}): PyTorch's momentum weighs the new batch, "
                "Keras's, Flax's and ONNX's the old value; old = 1 - new",
            )
        ]
    conv = _convention(dst)
    keyword = "momentum"
    want = w_src if dst.momentum_weights == NEW else 1.0 - w_src
    if dst.momentum is not None and src.momentum is not None and _same(src.momentum, dst.momentum, 1e-6):
        weighs = {NEW: "new batch", OLD: "old value"}
        rule = (
            f"{_fw(src)}'s momentum copied as it is, but {_fw(src)}'s weighs the "
            f"{weighs.get(src.momentum_weights or '', '?')} and {_fw(dst)}'s the "
            f"{weighs.get(dst.momentum_weights or '', '?')}: set {keyword}={want:g} (= 1 - {src.momentum:g})"
        )
    elif (
        conv is not None
        and conv.momentum is not None
        and dst.momentum is not None
        and _same(conv.momentum, dst.momentum, 1e-6)
    ):
        rule = f"{_fw(dst)}'s default momentum={conv.momentum:g} left in; set {keyword}={want:g}"
    else:
        rule = f"set {keyword}={want:g} on the port"
    detail = (
        f"in training the running statistics take {w_src:g} of each new batch in the source, {w_dst:g} in the port "
        "(inference is unchanged until the port trains)"
    )
    return [Finding("momentum", WARNING, a, b, rule, detail)]


def _inference(layer: NormLayer) -> bool:
    return layer.mode in (EVAL, FROZEN)


def _running_stats(src: NormLayer, dst: NormLayer) -> list[Finding]:
    a, b = src.running_stats, dst.running_stats
    if a is None or b is None:
        return []
    if a != b:
        severity = ERROR if _inference(src) or _inference(dst) else WARNING
        return [
            Finding(
                "running statistics",
                severity,
                "kept" if a else "none",
                "kept" if b else "none",
                "one side keeps running statistics and normalizes with them in inference, the other always with the "
                "batch's (PyTorch track_running_stats)",
            )
        ]
    if not a:
        return []
    if _onnx_inference(src) or _onnx_inference(dst):
        return []  # an inference-only node never updates them
    c_src, c_dst = _convention(src), _convention(dst)
    if (
        c_src is None
        or c_dst is None
        or not c_src.running_var
        or not c_dst.running_var
        or c_src.running_var == c_dst.running_var
    ):
        return []
    return [
        Finding(
            "running variance",
            INFO,
            c_src.running_var,
            c_dst.running_var,
            f"{_fw(src)} updates the running variance with the {c_src.running_var} batch variance, {_fw(dst)} with the "
            f"{c_dst.running_var} one: statistics copied over are used as they are in inference; training the port "
            "moves them by n/(n-1) per update (n = values per channel in a batch)",
        )
    ]


def _mode(src: NormLayer, dst: NormLayer) -> list[Finding]:
    a, b = src.mode, dst.mode
    if a is None or b is None or a == b:
        return []
    if PER_CALL in (a, b):
        return [
            Finding(
                "mode",
                INFO,
                a,
                b,
                "the port chooses per call (Keras training=, Flax use_running_average=): call it in inference mode to "
                "compare with the source in eval"
                if b == PER_CALL
                else "the source chooses per call (Keras training=, Flax use_running_average=)",
            )
        ]
    stats = {TRAIN: "the batch's", EVAL: "the running", FROZEN: "the running"}
    if stats.get(a) == stats.get(b):
        return [
            Finding(
                "mode",
                INFO,
                a,
                b,
                "both normalize with the running statistics now; Keras's trainable=False also keeps them in training, "
                "PyTorch's eval() until train()",
            )
        ]
    return [
        Finding(
            "mode",
            WARNING,
            a,
            b,
            f"the source normalizes with {stats.get(a, a)} statistics, the port with {stats.get(b, b)}: "
            "hand both over in the same mode (model.eval() / training=False)",
        )
    ]


# -- layout, features, groups -------------------------------------------------------------------

FIRST, LAST = "channels-first", "channels-last"


def _layout_of(layer: NormLayer) -> str | None:
    if layer.channel_axis == 1:
        return FIRST
    if layer.channel_axis == -1:
        return LAST
    return None


def _axis_text(layer: NormLayer) -> str:
    layout = _layout_of(layer)
    return f"axis {layer.channel_axis}" + (f" ({layout})" if layout else "")


def _layout(src: NormLayer, dst: NormLayer) -> list[Finding]:
    if src.op not in ("bn", "in", "gn") or dst.op not in ("bn", "in", "gn"):
        return []
    la, lb = _layout_of(src), _layout_of(dst)
    if src.channel_axis is None or dst.channel_axis is None or src.channel_axis == dst.channel_axis:
        return []
    out = []
    if la and lb:
        out.append(
            Finding(
                "layout",
                INFO,
                _axis_text(src),
                _axis_text(dst),
                "NCHW <-> NHWC: the channels at axis 1 in one, -1 in the other; the port's inputs are "
                "x.permute(0, 2, 3, 1) of the source's, parameters keep shape (C,)",
            )
        )
        if src.op == "gn" and dst.op == "gn":
            out.append(_group_order(src, dst))
    else:
        out.append(
            Finding(
                "layout",
                WARNING,
                _axis_text(src),
                _axis_text(dst),
                "the channel axes are neither both first/last nor NCHW <-> NHWC: check that the port normalizes the "
                "same axis (the feature counts below agree or not)",
            )
        )
    return out


def _group_order(src: NormLayer, dst: NormLayer) -> Finding:
    last = dst if _layout_of(dst) == LAST else src
    if last.confirmed:
        return Finding(
            "group order",
            INFO,
            "contiguous channels",
            "contiguous channels",
            f"{last.kind} splits the channels on the last axis into G contiguous groups: the same groups as on axis 1",
        )
    return Finding(
        "group order",
        WARNING,
        "contiguous channels",
        "not confirmed",
        f"{last.path} is a user group norm on channels-last input: it must group the same channels, reshaping "
        "(N, H, W, C) into (N, H, W, G, C/G), not (N, G, …) without moving the channels first",
    )


def _features(src: NormLayer, dst: NormLayer) -> list[Finding]:
    a, b = src.feature_shape, dst.feature_shape
    if a is None or b is None or a == b:
        return []
    if math.prod(a) == math.prod(b) and len(a) == len(b):
        return [
            Finding(
                "features",
                INFO,
                str(a),
                str(b),
                "the same normalized elements in another layout (NCHW <-> NHWC): "
                "the affine's values must be permuted the same way",
            )
        ]
    return [
        Finding(
            "features",
            ERROR,
            str(a),
            str(b),
            "another number of features: the port normalizes another axis (a channels-last model with axis=1, "
            "or a layer norm over other axes)",
        )
    ]


def _groups(src: NormLayer, dst: NormLayer) -> list[Finding]:
    if src.op != "gn" or dst.op != "gn" or src.groups is None or dst.groups is None or src.groups == dst.groups:
        return []
    return [
        Finding(
            "groups",
            ERROR,
            str(src.groups),
            str(dst.groups),
            f"another number of groups: set groups={src.groups} (Keras and Flax default to 32)",
        )
    ]


# -- affine, variance, dtype, weights -----------------------------------------------------------


def _constant(layer: NormLayer, role: str, value: float) -> bool:
    p = layer.param(role)
    return p is not None and p.min is not None and p.max is not None and p.min == value and p.max == value


def _affine(src: NormLayer, dst: NormLayer) -> list[Finding]:
    out = []
    for attr, role, neutral, keyword in (("weight", "weight", 1.0, "scale"), ("bias", "bias", 0.0, "center")):
        a, b = getattr(src, attr), getattr(dst, attr)
        if a is None or b is None or a == b:
            continue
        on = src if a else dst
        text = ("yes", "no") if a else ("no", "yes")
        p = on.param(role)
        if p is None or p.min is None or p.max is None:
            out.append(
                Finding(
                    f"affine {attr}",
                    WARNING,
                    *text,
                    f"one side applies a {attr}, the other none; its values are not known: if they are all "
                    f"{neutral:g} the two agree, otherwise match affine",
                )
            )
        elif _constant(on, role, neutral):
            out.append(
                Finding(
                    f"affine {attr}",
                    INFO,
                    *text,
                    f"{on.path}'s {attr} is all {neutral:g}: the same as none",
                )
            )
        else:
            out.append(
                Finding(
                    f"affine {attr}",
                    ERROR,
                    *text,
                    f"one side applies a {attr} ({'γ' if attr == 'weight' else 'β'}), the other none: "
                    f"match affine (PyTorch affine=/elementwise_affine=, Keras {keyword}=)",
                )
            )
    return out


def _variance(src: NormLayer, dst: NormLayer) -> list[Finding]:
    a, b = src.variance, dst.variance
    if a is None or b is None or a == b or ONE_PASS not in (a, b):
        return []
    return [
        Finding(
            "variance",
            WARNING,
            a,
            b,
            "a one-pass variance E[x²] − E[x]² loses precision when |mean| >> std (Flax: use_fast_variance=False)",
        )
    ]


def _dtype(src: NormLayer, dst: NormLayer) -> list[Finding]:
    out = []
    for attr, what in (
        ("dtype", "parameters' (or input's) dtype"),
        ("compute_dtype", "dtype the statistics are computed in"),
    ):
        a, b = getattr(src, attr), getattr(dst, attr)
        if attr == "compute_dtype":
            a, b = a or src.dtype, b or dst.dtype
        if a is None or b is None or a == b:
            continue
        out.append(Finding(attr, WARNING, a, b, f"another {what}: results differ by that dtype's rounding"))
        break  # the compute dtype follows the dtype unless said otherwise
    return out


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= SUMMARY_ATOL + rtol * max(abs(a), abs(b))


def _weights(src: NormLayer, dst: NormLayer) -> list[Finding]:
    out = []
    dtype = dst.dtype or src.dtype or "float32"
    rtol = max(SUMMARY_RTOL, DTYPE_RTOL.get(dtype, 0.0) if dtype in ("float16", "bfloat16") else 0.0)
    for role, title in ROLE_TITLES.items():
        pa, pb = src.param(role), dst.param(role)
        if pa is None or pb is None:
            continue
        if pa.shape is not None and pb.shape is not None and _squeeze(pa.shape) != _squeeze(pb.shape):
            out.append(
                Finding(
                    "weights",
                    ERROR,
                    f"{title} {pa.shape}",
                    f"{title} {pb.shape}",
                    "another shape (ONNX GroupNormalization-18 takes scale and bias per group, not per channel)",
                )
            )
            continue
        if None in (pa.min, pa.max, pa.mean, pb.min, pb.max, pb.mean):
            continue
        va = (float(pa.min or 0.0), float(pa.max or 0.0), float(pa.mean or 0.0))
        vb = (float(pb.min or 0.0), float(pb.max or 0.0), float(pb.mean or 0.0))
        if all(_close(x, y, rtol) for x, y in zip(va, vb, strict=True)):
            continue

        def show(v: tuple[float, float, float], title: str = title) -> str:
            return f"{title} min {_g(v[0])} max {_g(v[1])} mean {_g(v[2])}"

        out.append(
            Finding(
                "weights",
                ERROR,
                show(va),
                show(vb),
                f"the values differ ({pa.name} vs {pb.name}): copy the source's {role.replace('_', ' ')} into the port",
                f"compared by min/max/mean within rtol {rtol:g}",
            )
        )
    return out
