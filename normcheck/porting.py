"""The conventions side by side: one record per op and property, with the rule that
translates between frameworks wherever they differ. ``normcheck conventions`` renders these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from normcheck.conventions import BIASED, MACHINE_EPS, NEW, OLD, UNBIASED, Convention
from normcheck.frameworks import CONVENTIONS, FRAMEWORKS

FRAMEWORK_ORDER = tuple(FRAMEWORKS)  # the frameworks, in the registry's order
# conventions that are no framework's (the CS231n assignment's): compared only when asked for
OTHER_CONVENTIONS = tuple(name for name in CONVENTIONS if name not in FRAMEWORKS)
NO_SUCH_OP = "—"  # a convention without the op (CS231n has no instance or RMS norm); not compared
CHANNEL_OPS = ("bn", "in", "gn")


def _eps(c: Convention) -> str:
    return "finfo(dtype).eps" if c.eps == MACHINE_EPS else f"{c.eps:g}"


def _momentum(c: Convention) -> str:
    if c.momentum is None:
        return "-"
    weight = {NEW: "new batch", OLD: "old value"}[c.momentum_weights or NEW]
    return f"{c.momentum:g} (weight of the {weight})"


def _running_var(c: Convention) -> str:
    return {UNBIASED: "unbiased (n-1)", BIASED: "biased (n)", None: "-"}[c.running_var]


# (property, how a convention shows it)
PROPERTIES: tuple[tuple[str, Callable[[Convention], str]], ...] = (
    ("api", lambda c: c.api),
    ("eps", _eps),
    ("eps floor", lambda c: f"{c.eps_floor:g}" if c.eps_floor else "-"),
    ("momentum", _momentum),
    ("running variance", _running_var),
    # layer and RMS norm normalize trailing axes whatever the layout
    ("layout", lambda c: c.layout.replace("_", "-") if c.op in CHANNEL_OPS else "-"),
    ("statistics over", lambda c: c.reduction),
    ("affine", lambda c: c.affine),
    ("default groups", lambda c: str(c.groups) if c.groups else ("required" if c.op == "gn" else "-")),
    ("variance", lambda c: c.variance if c.op != "rms" else "-"),  # RMS norm has no mean
    ("gradients", lambda c: "yes" if c.gradients else "no (inference only)"),
    ("notes", lambda c: c.notes or "-"),
)
NOT_COMPARED = {"api", "notes", "statistics over"}  # descriptive: differ in wording, not in meaning


def _rule(prop: str, convs: dict[str, Convention]) -> str:
    """How to translate between the frameworks for a property on which they differ."""
    by = lambda pred: ", ".join(fw for fw, c in convs.items() if pred(c))
    if prop == "eps":
        return "defaults differ: pass eps explicitly on both sides of a port"
    if prop == "eps floor":
        return f"{by(lambda c: c.eps_floor)}: eps below the floor is raised silently; keep eps at or above it"
    without = by(lambda c: c.momentum is None)
    if prop in ("momentum", "running variance") and without:
        return f"{without}: no running statistics for this op; a port must drop them or compute them by hand"
    if prop == "momentum":
        old, new = by(lambda c: c.momentum_weights == OLD), by(lambda c: c.momentum_weights == NEW)
        if old and new:
            return (
                f"{old}: momentum weighs the old value, {new}: the new batch; "
                "momentum_old = 1 - momentum_new (PyTorch 0.1 = Keras/Flax/ONNX 0.9); defaults differ too"
            )
        return "defaults differ: pass momentum explicitly"
    if prop == "running variance":
        return (
            "PyTorch tracks the Bessel-corrected batch variance, the others the biased one: "
            "per update var_unbiased = var_biased * n / (n - 1), n = values per channel in the batch"
        )
    if prop == "layout":
        return (
            "channels-last APIs want x.permute(0, 2, ..., 1) (NCHW -> NHWC) or the channel axis set to 1; "
            "parameters keep shape (C,)"
        )
    if prop == "affine":
        rule = "match affine on both sides"
        off, required = by(lambda c: "off" in c.affine), by(lambda c: "required" in c.affine)
        if off:
            rule += f"; {off}: no scale/bias by default (affine=False)"
        if required:
            rule += f"; {required}: scale/bias are required inputs, give ones and zeros for none"
        return rule
    if prop == "default groups":
        return "pass the number of groups explicitly (Keras and Flax default to 32)"
    if prop == "variance":
        fragile = [c for c in convs.values() if c.fragile]
        safe = "; ".join(f"{c.framework}: {c.safe_setting}" for c in fragile if c.safe_setting)
        return f"one-pass variance loses all precision when |mean| >> std; set {safe}" if safe else ""
    if prop == "gradients":
        return f"{by(lambda c: not c.gradients)}: no gradients (inference only); check them in a training framework"
    return ""


def convention_rows(ops: tuple[str, ...], frameworks: tuple[str, ...] = FRAMEWORK_ORDER) -> list[dict[str, Any]]:
    """One record per (op, property): each framework's value, whether they differ, and the rule."""
    rows = []
    for op in ops:
        convs = {fw: CONVENTIONS[fw][op] for fw in frameworks if op in CONVENTIONS[fw]}
        for prop, show in PROPERTIES:
            values = {fw: show(c) for fw, c in convs.items()}
            if set(values.values()) <= {"-"}:
                continue  # the property does not apply to this op (or no framework asked for has it)
            differs = prop not in NOT_COMPARED and len(set(values.values())) > 1
            rows.append(
                {
                    "op": op,
                    "property": prop,
                    **{fw: values.get(fw, NO_SUCH_OP) for fw in frameworks},
                    "differs": differs,
                    "when porting": _rule(prop, convs) if differs else "",
                }
            )
    return rows
