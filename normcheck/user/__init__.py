"""User implementations (``--impl``): which form an object has, and the frameworks that check it.

The forms are the registry's (``normcheck.frameworks.FORMS``); each is built by its framework's
forms module (normcheck/frameworks/<name>/forms.py, a ``FormsModule``), which imports its
framework at the top, so it is imported only when a user implementation of that form is checked.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

from normcheck import frameworks as registry
from normcheck.conventions import Settings, settings
from normcheck.frameworks import CLASS, FORMS, FUNCTION, STYLE, Form
from normcheck.frameworks.base import Framework, FrameworkFacts, Implementation
from normcheck.names import OpName
from normcheck.ops import OpParams
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.quantize import QUANTIZED_OPS
from normcheck.ops.weight_standardization import WS_OPS
from normcheck.user.binding import (
    DEFAULT_LAYOUTS,
    FLAT,
    OP_ROLES,
    BindingError,
    BoundFunction,
    FunctionalAdapter,
    bind,
    creates_variables,
    creates_variables_message,
    declared_settings,
    restrict,
    takes_functional_arguments,
    takes_functional_signature,
)
from normcheck.user.spec import LoadError, SpecError, load_object, parse_spec
from normcheck.user.ws_forms import WS_FORMS, ws_settings

__all__ = [
    "EXPLICIT_EPS",
    "EXPLICIT_MOMENTUM",
    "FORMS",
    "BindingError",
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
# the forms that take adaLN (--op adaln)
ADALN_FORMS = (
    "torch_function",
    "torch_module",
    "tf_function",
    "keras_layer",
    "jax_function",
    "flax_module",
    "cs231n",
)


class FormError(Exception):
    """The object is not one of the supported forms (an error row)."""


STYLES = tuple(f.id for f in FORMS.values() if f.kind == STYLE)
FUNCTION_FRAMEWORKS = {f.framework: f.id for f in FORMS.values() if f.kind == FUNCTION}
CLASS_FORMS = tuple(f for f in FORMS.values() if f.kind == CLASS)


def _either(names: list[str]) -> str:
    """a, b or c"""
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _bases(cls: type) -> list[tuple[str, str]]:
    return [(c.__module__, c.__name__) for c in inspect.getmro(cls)]


def detect_form(obj: object, framework: str | None, style: str | None, name: str) -> str:
    """The form of ``obj``. A class's framework is inferred from its bases; a function needs
    ``framework`` (torch, jax or tensorflow) or ``style``. Raises FormError (an error row) for an object of
    no supported form, SpecError (a usage error) for flags that contradict it."""
    if style is not None:
        if style not in STYLES:
            raise SpecError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
        if not callable(obj) or inspect.isclass(obj):
            raise FormError(f"{name} is not a function; --style {style} takes forward and backward functions")
        return style
    if inspect.isclass(obj):
        bases = _bases(obj)
        form = next((f for f in CLASS_FORMS if _subclasses(bases, f)), None)
        if form is None:
            raise FormError(f"{name} is a class but not a subclass of {_either([f.base for f in CLASS_FORMS])}")
        if framework is not None and framework != form.framework:
            raise SpecError(f"{name} is a {form.framework} class, but --framework {framework} was given")
        return form.id
    if not callable(obj):
        raise FormError(f"{name} is a {type(obj).__name__}, not a function or a class")
    roots = {f.base_from.split(".")[0] for f in CLASS_FORMS}
    if any(m.split(".")[0] in roots for m, _ in _bases(type(obj))):
        raise FormError(f"{name} is an instance; give its class, which normcheck constructs for every case")
    styles = _either([f"--style {s}" for s in STYLES])
    if framework is None:
        named = _either([f"--framework {fw}" for fw in FUNCTION_FRAMEWORKS])
        raise SpecError(
            f"{name} is a function: say which framework it is written for with {named}, "
            f"or give {styles} with --backward for NumPy forward/backward functions"
        )
    if framework not in FUNCTION_FRAMEWORKS:
        functions = _either(list(FUNCTION_FRAMEWORKS))
        raise SpecError(
            f"a function for --framework {framework} is not supported; functions are {functions} "
            f"(or NumPy with {styles}); Keras code is given as a Layer subclass"
        )
    return FUNCTION_FRAMEWORKS[framework]


def _subclasses(bases: list[tuple[str, str]], form: Form) -> bool:
    """Whether a class with these (module, name) bases subclasses the class form's base."""
    base_name = form.base.rpartition(".")[2]
    return any(m.startswith(form.base_from) and n == base_name for m, n in bases)


OP_WORDS: dict[str, OpName] = {"group": "gn", "layer": "ln", "batch": "bn", "instance": "in", "rms": "rms"}
# Weight Standardization: timm's and BiT's StdConv2d, WSConv2d, weight_standardized_conv...
OP_WORDS.update({"stdconv": "ws", "wsconv": "ws", "weightstandard": "ws"})


# the fused add + norms and adaLN, for --impl: add_layernorm_forward, FusedAddRMSNorm, AdaLayerNorm
COMPOSITE_WORDS: dict[str, OpName] = {
    "addlayer": "add_ln",
    "addrms": "add_rms",
    "adaln": "adaln",
    "adalayer": "adaln",
    "adaptivelayer": "adaln",
}


def guess_op(name: str, plain: bool = False) -> OpName | None:
    """The op a name like MyGroupNorm or layernorm_forward stands for, when exactly one fits (a
    word inside a longer one that matches counts as that one: add_layernorm is add_ln, not ln).
    ``plain``: the five norms and ws only (a model's layers: normcheck.model.candidates)."""
    lowered = name.lower().replace("_", "")
    table = OP_WORDS if plain else {**OP_WORDS, **COMPOSITE_WORDS}
    words = [word for word in table if word in lowered]
    found = {table[w] for w in words if not any(w != longer and w in longer for longer in words)}
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

    def __init__(
        self,
        form: Form,
        obj: object,
        impl_name: str,
        omit_defaults: bool,
        backward: object | None = None,
        layout: str | None = None,
        param_shape: str = FLAT,
    ):
        self.form, self.obj, self.backward = form, obj, backward
        self.label = getattr(obj, "__name__", None) or impl_name
        self.layout, self.param_shape = layout, param_shape
        self._bound: dict[str, BoundFunction | None] = {}
        self.conventions = registry.CONVENTIONS[form.conventions_of]
        if form.dtypes is not None:
            self.dtypes = form.dtypes
        self.omit_defaults = omit_defaults
        self.impl_name = impl_name + (" (defaults)" if omit_defaults else "")
        self._built: dict[str, list[Implementation]] = {}

    def implementations(self, op: str) -> list[Implementation]:
        if op in WS_OPS:  # a convolution: the PyTorch forms only, never bound by name (user.ws_forms)
            if op not in self._built:
                impl = None
                if self.form.id in WS_FORMS:
                    build = registry.forms_module(self.form.framework).build
                    impl = build(self.form.id, op, self.obj, self.impl_name, self.omit_defaults, self.backward)
                self._built[op] = [] if impl is None else [impl]
            return self._built[op]
        if op == ADALN and self.form.id not in ADALN_FORMS:
            return []  # adaLN is taken as a function or module of PyTorch, TensorFlow/Keras or JAX/Flax
        if op not in self._built:
            builder = registry.forms_module(self.form.framework).build
            bound, obj = self.bound(op), self.obj
            if bound is not None and self.form.id != "tf_function":
                obj = FunctionalAdapter(bound, self.convention(op))  # called as F's op by the form
            elif bound is not None:
                obj = bound
            impl = builder(self.form.id, op, obj, self.impl_name, self.omit_defaults, self.backward)
            if impl is not None and bound is not None and self.form.id != "tf_function":
                impl = restrict(impl, bound)
            self._built[op] = [] if impl is None else [impl]
        return self._built[op]

    def bound(self, op: str) -> BoundFunction | None:
        """The function bound by its parameters' names for ``op`` (normcheck.user.binding), or None
        where it is called as its framework's functional op (or is no function). BindingError
        where it can be neither."""
        if op not in self._bound:
            self._bound[op] = self._bind(op)
        return self._bound[op]

    def _bind(self, op: str) -> BoundFunction | None:
        if self.form.kind != FUNCTION or op in WS_OPS:
            return None
        layout = self.layout or DEFAULT_LAYOUTS[self.form.id]
        if self.form.id == "tf_function":
            made = creates_variables(self.obj)
            if made is not None:
                raise BindingError(creates_variables_message(self.label, f"it calls {made}"))
        if op not in OP_ROLES:  # a fused add + norm, adaLN: one calling convention each, never bound by name
            return None
        as_given = layout == DEFAULT_LAYOUTS[self.form.id] and self.param_shape == FLAT
        if self.form.id != "tf_function" and as_given and takes_functional_signature(self.obj, op):
            return None  # called as the torch.nn.functional op
        try:
            binding = bind(self.obj, op, self.label)
        except BindingError:
            positional = as_given and takes_functional_arguments(self.obj, op)
            if positional and (self.form.id != "tf_function" or op in QUANTIZED_OPS):
                # names that know their roles but not which is which: F's by position (a TensorFlow
                # function: as an FP8-output norm, ``fn(x, normalized_shape, weight, eps, scale)``)
                return None
            raise
        return BoundFunction(self.obj, binding, layout, self.param_shape, self.omit_defaults)

    def settings(self, op: str, dtype: str, eps: float | None = None, momentum: float | None = None) -> Settings:
        conv = self.convention(op)
        if op in WS_OPS:  # the eps the code declares, takes or hard-codes (normcheck.user.ws_forms)
            return ws_settings(self.obj, conv, dtype, eps, EXPLICIT_EPS, self.omit_defaults)
        bound = self.bound(op)
        if self.omit_defaults and bound is not None:
            # bound by name: the function's own declared defaults (if numbers) must apply
            declared_eps, declared_momentum = declared_settings(bound, conv)
            return replace(settings(conv, dtype, declared_eps, declared_momentum), notes=())
        if self.omit_defaults:
            return settings(conv, dtype)
        if eps is None:
            eps = EXPLICIT_EPS
        if momentum is None and conv.momentum_weights is not None:
            momentum = EXPLICIT_MOMENTUM
        return replace(settings(conv, dtype, eps, momentum), notes=())

    def case_params(self, op: str, params: OpParams) -> OpParams:
        if not self.omit_defaults or op == ADALN:  # adaLN's shift and scale are inputs, never left out
            return params
        bound = self.bound(op)
        if bound is not None and (bound.binding.required("weight") or bound.binding.required("bias")):
            return params  # gamma and beta cannot be left out
        return replace(params, affine=False)

    def facts(self) -> FrameworkFacts:
        return replace(super().facts(), form=self.form.id, omit_defaults=self.omit_defaults)

    def device_problem(self, device: str) -> str | None:
        if device == "cpu":
            return None
        if registry.REGISTRY[self.form.framework].adapter is None:
            return f"{self.form.title} run on the CPU only"
        return registry.load(self.form.framework).device_problem(device)


def user_frameworks(
    name: str,
    obj: object,
    form: str,
    backward: object | None = None,
    layout: str | None = None,
    param_shape: str = FLAT,
) -> list[UserFramework]:
    """The two call styles of one loaded implementation (``layout`` and ``param_shape``: how a
    function bound by name takes x and its parameters, see normcheck.user.binding)."""
    return [UserFramework(FORMS[form], obj, name, omit, backward, layout, param_shape) for omit in (False, True)]
