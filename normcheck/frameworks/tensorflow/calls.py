"""How normcheck calls the user's TensorFlow code: constructing a Keras layer class with the
arguments a case gives, and running a function while watching for variables it creates (normcheck
cannot give those the case's values). Shared by the TensorFlow forms (normcheck.frameworks.
tensorflow.norm_forms, ws, quantized)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from normcheck.frameworks.tensorflow.adapter import keras, tf
from normcheck.user.modulation import MODULATION_ROLES


def _call_text(cls: type, args: dict[str, Any]) -> str:
    return f"{cls.__name__}({', '.join(f'{a}={v!r}' for a, v in args.items())})"


def construct(cls: type, args: dict[str, Any]) -> keras.Layer:
    try:
        layer = cls(**args)
    except TypeError as e:
        raise TypeError(
            f"{_call_text(cls, args)} failed ({e}); its constructor must take the arguments of the Keras layer "
            "and pass the others (dtype) on to keras.layers.Layer"
        ) from e
    if not isinstance(layer, keras.Layer):
        raise TypeError(f"{_call_text(cls, args)} returned a {type(layer).__name__}, not a keras.layers.Layer")
    return layer


def eps_parameter(cls: type) -> str | None:
    """The parameter of ``cls``'s constructor that takes eps, named (``**kwargs`` takes none: a
    Keras layer passes those on to keras.layers.Layer, which refuses an eps)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return next((n for n in MODULATION_ROLES["eps"] if n in params and params[n].kind in kinds), None)


class VariableWatch:
    """Records the variables created while the user's function runs (TF1-style code, or a
    function that makes its own gamma and beta)."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def __call__(self, next_creator: Any, **kwargs: Any) -> Any:
        self.created.append(str(kwargs.get("name") or "unnamed"))
        return next_creator(**kwargs)


def watched(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, refused when it creates variables of its own: normcheck could not
    give them the case's values."""
    watch = VariableWatch()
    with tf.variable_creator_scope(watch):
        out = fn(*args, **kwargs)
    if watch.created:
        raise TypeError(
            f"{label} creates its own variables (tf.Variable {watch.created[0]!r}), so normcheck cannot give "
            "them the case's values; take every parameter as an argument, or check a keras.layers.Layer "
            "subclass that creates its variables in build() (--impl FILE:Class)"
        )
    return out
