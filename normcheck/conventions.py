"""What a framework's semantics of an op are made of: defaults, meanings, layouts.

``Convention`` is one framework's declaration for one op; each framework declares its own in its
facts module (normcheck/frameworks/<name>/facts.py), and the registry assembles them into
``normcheck.frameworks.CONVENTIONS``. Adapters take their declarations from there, the reference
is parameterized by them, and ``normcheck conventions`` prints them. Nothing here imports a
framework, so the command is instant; tests/test_conventions.py checks every value against the
installed frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from normcheck.ops.rms_norm import default_eps as machine_eps

NEW = "new"  # momentum is the weight of the new batch: running = (1 - m) * running + m * batch
OLD = "old"  # momentum is the weight of the old value: running = m * running + (1 - m) * batch
UNBIASED, BIASED = "unbiased", "biased"
CHANNELS_FIRST, CHANNELS_LAST = "channels_first", "channels_last"
TWO_PASS = "two-pass"
MACHINE_EPS = "machine eps"  # eps=None in PyTorch: finfo(compute dtype).eps


@dataclass(frozen=True)
class Convention:
    """How one framework's main API for one op behaves when the caller relies on its defaults."""

    framework: str
    op: str
    api: str
    eps: float | str  # a number, or MACHINE_EPS
    layout: str  # where the API expects channels (CHANNELS_FIRST or CHANNELS_LAST)
    reduction: str  # the axes the statistics run over, in the API's own terms
    affine: str  # shape of weight/bias, and whether they are on by default
    variance: str = TWO_PASS  # how the default computes the variance
    momentum: float | None = None  # the API's default, in its own meaning
    momentum_weights: str | None = None  # NEW or OLD
    running_var: str | None = None  # UNBIASED or BIASED; None: no running statistics
    eps_floor: float = 0.0  # eps below this is silently raised to it
    gradients: bool = True
    groups: int | None = None  # the default number of groups
    safe_setting: str = ""  # the setting that avoids a fragile default (see ``variance``)
    notes: str = ""

    def default_eps(self, dtype: str) -> float:
        return machine_eps(dtype) if self.eps == MACHINE_EPS else float(self.eps)

    @property
    def default_new_weight(self) -> float:
        """The default momentum in PyTorch's meaning (weight of the new batch)."""
        if self.momentum is None:
            return 0.1
        return self.momentum if self.momentum_weights == NEW else 1.0 - self.momentum

    def to_framework_momentum(self, new_weight: float) -> float:
        """Momentum in PyTorch's meaning → the value this API must be given."""
        return new_weight if self.momentum_weights == NEW else 1.0 - new_weight

    @property
    def unbiased_running_var(self) -> bool:
        return self.running_var == UNBIASED

    @property
    def fragile(self) -> bool:
        return self.variance != TWO_PASS


@dataclass(frozen=True)
class Settings:
    """The values one case runs with under a framework's conventions, and how they were derived."""

    eps: float  # what the reference uses (after any floor)
    momentum: float  # PyTorch's meaning: the weight of the new batch
    unbiased_running_var: bool
    framework_momentum: float | None  # what the API itself is given
    notes: tuple[str, ...] = ()


def settings(conv: Convention, dtype: str, eps: float | None = None, momentum: float | None = None) -> Settings:
    """The case's eps and momentum: the API's defaults, or the caller's values translated into
    the API's meaning, with a note for each translation a porter must make by hand."""
    notes = []
    if eps is None:
        eps = conv.default_eps(dtype)
    elif eps != conv.default_eps(dtype):
        default = conv.eps if conv.eps == MACHINE_EPS else f"{conv.default_eps(dtype):g}"
        notes.append(f"{conv.api}: eps={eps:g} given explicitly (its default is {default})")
    if eps < conv.eps_floor:
        notes.append(f"{conv.api}: eps={eps:g} is silently raised to {conv.eps_floor:g}")
        eps = conv.eps_floor
    new_weight = conv.default_new_weight if momentum is None else momentum
    framework_momentum = None
    if conv.momentum_weights is not None:
        framework_momentum = conv.to_framework_momentum(new_weight)
        if momentum is not None and conv.momentum_weights != NEW:
            notes.append(
                f"{conv.api}: momentum={framework_momentum:g} (the weight of the old value) for momentum {momentum:g} "
                "in PyTorch's meaning (the weight of the new batch)"
            )
    return Settings(eps, new_weight, conv.unbiased_running_var, framework_momentum, tuple(notes))


FIELD_NAMES = tuple(f.name for f in fields(Convention))
