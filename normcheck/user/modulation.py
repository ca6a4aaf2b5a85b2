"""Calling a user's adaptive layer norm (``--op adaln``): ``fn(x, shift, scale, eps)``, or a module's
``forward(x, shift, scale)``, bound by its parameters' names where they say which is which.

DiT's own helper is ``modulate(x, shift, scale)``; others write ``(x, scale, shift)`` or
``(hidden_states, shift_msa, scale_msa)``. A parameter named for shift and one named for scale are
given those by keyword, whatever their order; a signature whose names do not say (``fn(a, b, c,
d)``) is called positionally as ``(x, shift, scale[, eps])``, DiT's order. Imports no framework.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from normcheck.user.binding import ROLES, BindingError, signature

# role -> the parameter names that take it (compared case-insensitively)
MODULATION_ROLES: dict[str, tuple[str, ...]] = {
    "input": ROLES["input"],
    "shift": ("shift", "shift_msa", "shift_mlp", "shift_mca"),
    "scale": ("scale", "scale_msa", "scale_mlp", "scale_mca"),
    "eps": ROLES["eps"],
}
POSITIONAL_ORDER = ("input", "shift", "scale", "eps")
_ROLE_OF = {name.lower(): role for role, names in MODULATION_ROLES.items() for name in names}


@dataclass(frozen=True)
class ModulationCall:
    """How to call the user's adaLN: by keyword (``names``: role -> parameter name) or positionally
    in DiT's order (``names`` empty; ``positional`` the count of positional parameters)."""

    label: str
    names: dict[str, str]
    positional: int
    takes_eps: bool

    def arguments(self, x: Any, shift: Any, scale: Any, eps: float | None) -> tuple[list[Any], dict[str, Any]]:
        """(args, kwargs) for one call; ``eps`` None (or a function without eps) leaves it out."""
        values = {"input": x, "shift": shift, "scale": scale}
        if eps is not None and self.takes_eps:
            values["eps"] = eps
        if self.names:
            return [], {self.names[role]: v for role, v in values.items()}
        return [values[role] for role in POSITIONAL_ORDER if role in values], {}

    def call(self, fn: Callable[..., Any], x: Any, shift: Any, scale: Any, eps: float | None) -> Any:
        args, kwargs = self.arguments(x, shift, scale, eps)
        return fn(*args, **kwargs)


def bind_modulation(fn: Any, label: str) -> ModulationCall:
    """The call of ``fn`` (a function, or a module's bound ``forward``) for adaLN's x, shift, scale
    and eps. BindingError (one line) where it can take neither by name nor positionally."""
    sig = signature(fn)
    if sig is None:  # a builtin or C extension: trust DiT's order
        return ModulationCall(label, {}, 4, True)
    params = [p for p in sig.parameters.values() if p.kind not in (inspect.Parameter.VAR_POSITIONAL, p.VAR_KEYWORD)]
    named: dict[str, str] = {}
    for p in params:
        role = _ROLE_OF.get(p.name.lower())
        if role is not None and role not in named and p.kind != p.POSITIONAL_ONLY:
            named[role] = p.name
    unnamed_required = [p.name for p in params if p.name not in named.values() and p.default is inspect.Parameter.empty]
    if {"input", "shift", "scale"} <= set(named) and not unnamed_required:
        return ModulationCall(label, named, 0, "eps" in named)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values())
    if len(positional) < 3 and not takes_any:
        accepted = "; ".join(f"{role}: {', '.join(names)}" for role, names in MODULATION_ROLES.items())
        raise BindingError(
            f"cannot call {label}{sig} as adaLN's (x, shift, scale, eps): it takes fewer than three arguments; "
            f"name them (accepted names: {accepted}) or take them in DiT's order"
        )
    if len([p for p in positional if p.default is inspect.Parameter.empty]) > 4:
        raise BindingError(f"cannot call {label}{sig} as adaLN's (x, shift, scale, eps): it requires more arguments")
    return ModulationCall(label, {}, len(positional), takes_any or len(positional) >= 4)
