"""What ``normcheck model`` finds: one NormLayer per normalization layer, in an Inventory.

Records are frozen dataclasses of plain Python data (str, int, float, bool, tuples), so a worker
can send them to the parent and every renderer reads them through ``as_dict()``, one flat dict.
The later parts (per-layer checks, port comparison) key on ``path`` and read the configuration
fields; a field a framework does not have is None, never a guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from normcheck.conventions import MACHINE_EPS, NEW, OLD
from normcheck.names import OpName

# Why a record is a norm layer (``NormLayer.basis``)
BUILT_IN = "built-in layer"
FUSED = "fused op"
MATCHED = "matched subgraph"
CANDIDATE = "candidate: user layer, unconfirmed"

# ``NormLayer.mode``: which statistics a batch norm normalizes with when the model runs
TRAIN = "train"  # the batch's (and the running statistics are updated)
EVAL = "eval"  # the running statistics
PER_CALL = "per call"  # chosen by each call (Keras ``training=``, Flax ``use_running_average=`` at call time)
FROZEN = "frozen"  # the running statistics, even when called in training (Keras trainable=False)

# ``NormLayer.momentum_weights`` besides conventions.NEW and conventions.OLD: PyTorch's momentum=None
CUMULATIVE = "cumulative average"

# ``NormLayer.variance``
TWO_PASS = "two-pass"
ONE_PASS = "one-pass E[x²] − E[x]²"

OP_TITLES = {"bn": "batch norm", "ln": "layer norm", "in": "instance norm", "gn": "group norm", "rms": "RMS norm"}
PARAM_ROLES = ("weight", "bias", "running_mean", "running_var")

__all__ = [
    "BUILT_IN",
    "CANDIDATE",
    "CUMULATIVE",
    "EVAL",
    "FROZEN",
    "FUSED",
    "MACHINE_EPS",
    "MATCHED",
    "NEW",
    "OLD",
    "ONE_PASS",
    "PER_CALL",
    "TRAIN",
    "TWO_PASS",
    "Inventory",
    "NormLayer",
    "ParamSummary",
]


@dataclass(frozen=True)
class ParamSummary:
    """One weight, bias or running statistic of a layer."""

    role: str  # one of PARAM_ROLES
    name: str  # its own name in the model: "layer1.0.bn1.weight", "bn/gamma", an ONNX initializer
    shape: tuple[int, ...] | None  # None: not known (a lazy module's uninitialized parameter)
    dtype: str | None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    note: str = ""  # why the values are missing, when they are

    def brief(self) -> str:
        """'weight (8,) float32 [0.9, 1.1] mean 1'"""
        shape = (
            "?"
            if self.shape is None
            else "(" + ", ".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "") + ")"
        )
        text = f"{self.role} {shape} {self.dtype or '?'}"
        if self.min is not None and self.max is not None and self.mean is not None:
            text += f" [{self.min:.3g}, {self.max:.3g}] mean {self.mean:.3g}"
        return text + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class NormLayer:
    """One normalization layer of a model, with its own configuration and parameters."""

    path: str  # torch qualified name, Keras layer path, Flax path, ONNX node name or "first..last"
    op: OpName | None  # bn, ln, in, gn, rms; None for a candidate whose op its name does not tell
    kind: str  # "torch.nn.GroupNorm", "onnx LayerNormalization", "decomposed layer norm", ...
    framework: str  # the registry name whose conventions apply: torch, tensorflow, jax, onnxruntime
    confirmed: bool  # False for a candidate: a user layer that looks like a norm layer
    basis: str  # why it is listed: BUILT_IN, FUSED, MATCHED or CANDIDATE
    eps: float | str | None = None  # a number, conventions.MACHINE_EPS, or None when unknown
    momentum: float | None = None  # as the layer itself takes it
    momentum_weights: str | None = None  # what ``momentum`` weights: NEW (the batch), OLD (the old value), CUMULATIVE
    weight: bool | None = None  # a scale (γ) is applied
    bias: bool | None = None  # a shift (β) is applied
    groups: int | None = None  # group norm's G (instance norm as group norm: G = C)
    axes: tuple[int, ...] | None = None  # the axes the statistics run over, where the layer fixes them
    channel_axis: int | None = None  # bn/in/gn: the axis holding the channels
    feature_shape: tuple[int, ...] | None = None  # num_features / normalized_shape / the affine's shape
    running_stats: bool | None = None  # running mean and variance are kept
    mode: str | None = None  # TRAIN, EVAL, PER_CALL or FROZEN (batch norm and tracked instance norm)
    dtype: str | None = None  # the input's (ONNX) or the parameters' dtype
    compute_dtype: str | None = None  # where it differs from ``dtype``: Cast nodes, Keras mixed precision
    variance: str | None = None  # TWO_PASS or ONE_PASS where the layer says how it computes it
    opset: int | None = None  # ONNX: the opset of the node's domain
    nodes: tuple[str, ...] = ()  # ONNX: every node of the layer, in graph order
    input: str | None = None  # ONNX: the tensor normalized
    output: str | None = None  # ONNX: the layer's output tensor (after the affine)
    params: tuple[ParamSummary, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def affine(self) -> bool | None:
        if self.weight is None and self.bias is None:
            return None
        return bool(self.weight or self.bias)

    @property
    def new_batch_weight(self) -> float | None:
        """The momentum in PyTorch's meaning (the weight of the new batch), whatever the layer's."""
        if self.momentum is None:
            return None
        if self.momentum_weights == NEW:
            return self.momentum
        if self.momentum_weights == OLD:
            return 1.0 - self.momentum
        return None

    def param(self, role: str) -> ParamSummary | None:
        return next((p for p in self.params if p.role == role), None)

    def with_notes(self, *notes: str) -> NormLayer:
        return replace(self, notes=(*self.notes, *notes))

    def as_dict(self) -> dict[str, Any]:
        """One flat dict: scalars, lists of scalars, one group of columns per parameter role."""
        new_weight = self.new_batch_weight
        row: dict[str, Any] = {
            "path": self.path,
            "op": self.op,
            "kind": self.kind,
            "framework": self.framework,
            "confirmed": self.confirmed,
            "basis": self.basis,
            "eps": self.eps,
            "momentum": self.momentum,
            "momentum_weights": self.momentum_weights,
            "momentum_new_batch": None if new_weight is None else round(new_weight, 12),
            "affine": self.affine,
            "weight": self.weight,
            "bias": self.bias,
            "groups": self.groups,
            "axes": None if self.axes is None else list(self.axes),
            "channel_axis": self.channel_axis,
            "feature_shape": None if self.feature_shape is None else list(self.feature_shape),
            "running_stats": self.running_stats,
            "mode": self.mode,
            "dtype": self.dtype,
            "compute_dtype": self.compute_dtype,
            "variance": self.variance,
            "opset": self.opset,
            "nodes": list(self.nodes),
            "input": self.input,
            "output": self.output,
        }
        for role in PARAM_ROLES:
            p = self.param(role)
            row[f"{role}_name"] = None if p is None else p.name
            row[f"{role}_shape"] = None if p is None or p.shape is None else list(p.shape)
            row[f"{role}_dtype"] = None if p is None else p.dtype
            row[f"{role}_min"] = None if p is None else p.min
            row[f"{role}_max"] = None if p is None else p.max
            row[f"{role}_mean"] = None if p is None else p.mean
        row["notes"] = list(self.notes)
        return row


@dataclass(frozen=True)
class Inventory:
    """Every normalization layer of one model, in the model's own order."""

    source: str  # the SPEC or file as the user gave it
    framework: str  # the registry name of the model's framework
    loader: str  # how it was loaded: "torch.nn.Module", "TorchScript", "torch.export", "ONNX", ...
    model: str  # the model's class, or the ONNX producer
    layers: tuple[NormLayer, ...] = ()
    notes: tuple[str, ...] = ()  # about the whole model (a lazy module, weights not read, ...)
    opsets: tuple[tuple[str, int], ...] = ()  # ONNX: (domain, version); "" is the default domain
    seconds: float = 0.0  # loading and inspecting, in the worker

    @property
    def confirmed(self) -> tuple[NormLayer, ...]:
        return tuple(layer for layer in self.layers if layer.confirmed)

    @property
    def candidates(self) -> tuple[NormLayer, ...]:
        return tuple(layer for layer in self.layers if not layer.confirmed)

    def counts(self) -> dict[str, int]:
        """Confirmed layers per op, in OP_TITLES order, then "candidate"."""
        ops = Counter(str(layer.op) for layer in self.confirmed)
        out = {op: ops[op] for op in OP_TITLES if ops[op]}
        if self.candidates:
            out["candidate"] = len(self.candidates)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "framework": self.framework,
            "loader": self.loader,
            "model": self.model,
            "layers": len(self.layers),
            "confirmed": len(self.confirmed),
            "candidates": len(self.candidates),
            "counts": self.counts(),
            "opsets": {domain or "ai.onnx": version for domain, version in self.opsets},
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }

    def records(self) -> list[dict[str, Any]]:
        return [layer.as_dict() for layer in self.layers]


@dataclass
class Findings:
    """What an inspector collects: records, each path once (a shared module is listed once), and
    notes about the whole model."""

    layers: list[NormLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    opsets: tuple[tuple[str, int], ...] = ()
    paths: set[str] = field(default_factory=set)

    def add(self, layer: NormLayer) -> None:
        if layer.path not in self.paths:
            self.paths.add(layer.path)
            self.layers.append(layer)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
