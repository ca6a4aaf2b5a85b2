"""User implementations (``--impl``): which form an object has, and the frameworks that check it.

Each form lives in a module of this package that imports its framework at the top, so it is
imported only when a user implementation of that form is checked. A form module provides::

    build(form, op, obj, name, omit_defaults, backward) -> Implementation | None

``None`` when the form has no version of ``op``. With ``omit_defaults`` the implementation
leaves out every optional argument the case does not need (eps, momentum, weight and bias
when there are none), so the framework's own defaults must apply; otherwise it passes them all.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, replace

from normcheck.conventions import Settings, settings
from normcheck.frameworks.base import Framework, Implementation
from normcheck.ops import OpParams
from normcheck.user.spec import LoadError, SpecError, load_object, parse_spec

__all__ = [
    "EXPLICIT_EPS",
    "EXPLICIT_MOMENTUM",
    "FORMS",
    "Form",
    "FormError",
    "LoadError",
    "SpecError",
    "UserFramework",
    "detect_form",
    "guess_op",
    "load_object",
    "parse_spec",
    "user_frameworks",
]

# Values given explicitly when the user asked for none. Neither is any framework's default, so
# an implementation that ignores the argument (and uses its own default) is caught.
EXPLICIT_EPS = 1e-4
EXPLICIT_MOMENTUM = 0.25  # PyTorch's meaning: the weight of the new batch
USER = "user"


class FormError(Exception):
    """The object is not one of the supported forms (an error row)."""


@dataclass(frozen=True)
class Form:
    id: str
    module: str  # normcheck.user.<module> holding build()
    conventions_of: str  # whose defaults and meanings it follows
    framework: str | None  # the built-in framework it needs installed (None: NumPy only)
    title: str


FORMS: dict[str, Form] = {
    f.id: f
    for f in (
        Form(
            "torch_function",
            "normcheck.user.torch",
            "torch",
            "torch",
            "a PyTorch function with the signature of the torch.nn.functional op",
        ),
        Form(
            "torch_module",
            "normcheck.user.torch",
            "torch",
            "torch",
            "a torch.nn.Module subclass with the constructor of the torch.nn layer",
        ),
        Form(
            "keras_layer",
            "normcheck.user.keras",
            "tensorflow",
            "tensorflow",
            "a keras.layers.Layer subclass with the constructor of the Keras layer, channels-last",
        ),
        Form(
            "jax_function",
            "normcheck.user.jax",
            "torch",
            "jax",
            "a JAX function with the signature of the torch.nn.functional op, channels-first",
        ),
        Form(
            "flax_module",
            "normcheck.user.jax",
            "jax",
            "jax",
            "a flax.linen.Module subclass with the fields of the Flax layer, channels-last",
        ),
        Form(
            "cs231n",
            "normcheck.user.cs231n",
            "cs231n",
            None,
            "NumPy forward/backward functions in the CS231n assignment-2 convention",
        ),
    )
}
STYLES = ("cs231n",)
FUNCTION_FRAMEWORKS = {"torch": "torch_function", "jax": "jax_function"}


def _bases(cls: type) -> list[tuple[str, str]]:
    return [(c.__module__, c.__name__) for c in inspect.getmro(cls)]


def detect_form(obj: object, framework: str | None, style: str | None, name: str) -> str:
    """The form of ``obj``. A class's framework is inferred from its bases; a function needs
    ``framework`` (torch or jax) or ``style``. Raises FormError (an error row) for an object of
    no supported form, SpecError (a usage error) for flags that contradict it."""
    if style is not None:
        if style not in STYLES:
            raise SpecError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
        if not callable(obj) or inspect.isclass(obj):
            raise FormError(f"{name} is not a function; --style {style} takes forward and backward functions")
        return style
    if inspect.isclass(obj):
        bases = _bases(obj)
        if any(m.startswith("torch.nn") and n == "Module" for m, n in bases):
            form = "torch_module"
        elif any(m.startswith("keras") and n == "Layer" for m, n in bases):
            form = "keras_layer"
        elif any(m.startswith("flax.linen") and n == "Module" for m, n in bases):
            form = "flax_module"
        else:
            raise FormError(
                f"{name} is a class but not a subclass of torch.nn.Module, keras.layers.Layer or flax.linen.Module"
            )
        inferred = FORMS[form].framework
        if framework is not None and framework != inferred:
            raise SpecError(f"{name} is a {inferred} class, but --framework {framework} was given")
        return form
    if not callable(obj):
        raise FormError(f"{name} is a {type(obj).__name__}, not a function or a class")
    if any(m.split(".")[0] in ("torch", "keras", "flax") for m, _ in _bases(type(obj))):
        raise FormError(f"{name} is an instance; give its class, which normcheck constructs for every case")
    if framework is None:
        raise SpecError(
            f"{name} is a function: say which framework it is written for with --framework torch or --framework "
            "jax, or give --style cs231n with --backward for NumPy forward/backward functions"
        )
    if framework not in FUNCTION_FRAMEWORKS:
        raise SpecError(
            f"a function for --framework {framework} is not supported; functions are torch or jax "
            "(or NumPy with --style cs231n); Keras code is given as a Layer subclass"
        )
    return FUNCTION_FRAMEWORKS[framework]


OP_WORDS = {"group": "gn", "layer": "ln", "batch": "bn", "instance": "in", "rms": "rms"}


def guess_op(name: str) -> str | None:
    """The op a name like MyGroupNorm or layernorm_forward stands for, when exactly one fits."""
    lowered = name.lower().replace("_", "")
    found = {op for word, op in OP_WORDS.items() if word in lowered}
    return found.pop() if len(found) == 1 else None


class UserFramework(Framework):
    """A user implementation in one call style, under the conventions of its form's framework.

    Two are checked for every implementation: all optional arguments given explicitly (eps and
    momentum at values that are no framework's default unless the user gave some), and all of
    them left out (the framework's defaults must apply; affine off, so weight and bias are
    left out too).
    """

    name = USER
    known_issues = ()

    def __init__(self, form: Form, obj: object, impl_name: str, omit_defaults: bool, backward: object | None = None):
        self.form, self.obj, self.backward = form, obj, backward
        self.conventions_of = form.conventions_of
        self.omit_defaults = omit_defaults
        self.impl_name = impl_name + (" (defaults)" if omit_defaults else "")
        self._built: dict[str, list[Implementation]] = {}

    def implementations(self, op: str) -> list[Implementation]:
        if op not in self._built:
            builder = importlib.import_module(self.form.module).build
            impl = builder(self.form.id, op, self.obj, self.impl_name, self.omit_defaults, self.backward)
            self._built[op] = [] if impl is None else [impl]
        return self._built[op]

    def settings(self, op: str, dtype: str, eps: float | None = None, momentum: float | None = None) -> Settings:
        conv = self.convention(op)
        if self.omit_defaults:
            return settings(conv, dtype)
        if eps is None:
            eps = EXPLICIT_EPS
        if momentum is None and conv.momentum_weights is not None:
            momentum = EXPLICIT_MOMENTUM
        return replace(settings(conv, dtype, eps, momentum), notes=())

    def case_params(self, op: str, params: OpParams) -> OpParams:
        return replace(params, affine=False) if self.omit_defaults else params

    def device_problem(self, device: str) -> str | None:
        if device == "cpu":
            return None
        if self.form.framework is None:
            return f"{self.form.title} run on the CPU only"
        from normcheck import frameworks

        return frameworks.load(self.form.framework).device_problem(device)


def user_frameworks(name: str, obj: object, form: str, backward: object | None = None) -> list[UserFramework]:
    """The two call styles of one loaded implementation."""
    return [UserFramework(FORMS[form], obj, name, omit, backward) for omit in (False, True)]
