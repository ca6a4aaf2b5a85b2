"""The one registry of frameworks, read without importing any framework.

Each framework lives in one folder, normcheck/frameworks/<name>/, and has one entry in REGISTRY.
normcheck.frameworks.base declares what each module of a folder provides:

    adapter.py   the Framework subclass and its implementations, to verify (numpy has none)
    forms.py     user code written for the framework (``--impl``), in the forms its entry lists
    bench.py     timed calls of its implementations and of its forms
    facts.py     its conventions and documented defects, importable without the framework
    repro.py     a standalone reproducer's code for its implementations and forms, as text
    __init__.py  a docstring only: importing the package must not import the framework

Everything that lists frameworks (verify's and bench's choices, the conventions command, the
porting order, the user forms, a bench report's versions) reads this registry, and the modules are
imported by the names given here. Adding a framework is its folder plus one entry in REGISTRY.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from normcheck.conventions import Convention
    from normcheck.frameworks.base import (
        AdapterModule,
        BenchModule,
        FactsModule,
        FormsModule,
        Framework,
        ReproModule,
    )
    from normcheck.names import DtypeName

# How a form's object is recognised (see normcheck.user.detect_form)
FUNCTION = "function"  # a function, for the framework named with --framework
CLASS = "class"  # a subclass of the form's base class
STYLE = "style"  # functions in a convention named with --style <form id>


@dataclass(frozen=True)
class Form:
    """One way of writing user code (``--impl``), built by its framework's forms module."""

    id: str
    framework: str  # the registry entry whose forms module builds it; its probe must be installed
    conventions_of: str  # the CONVENTIONS name whose defaults and meanings it follows
    title: str
    kind: str  # FUNCTION, CLASS or STYLE
    base: str = ""  # CLASS: the base class as the user knows it
    base_from: str = ""  # CLASS: the prefix of the module defining that class (Keras's is keras.src...)
    # the dtypes checked when the user names none (--dtype, a config's dtypes, the API's dtypes);
    # None: every dtype verify checks by default
    dtypes: tuple[DtypeName, ...] | None = None


@dataclass(frozen=True)
class FrameworkInfo:
    """One framework's entry: how to tell it is installed, and the modules of its folder."""

    name: str
    extra: str | None  # the pip extra that installs it; None: a core dependency
    probe: tuple[str, ...]  # import names that must be installed (importlib.util.find_spec)
    adapter: str | None  # its adapter module; None: no built-in implementations to verify
    forms_module: str | None  # its forms module; None: no user forms
    bench: str  # its bench module
    facts: str  # its facts module
    forms: tuple[Form, ...] = ()  # the user forms its forms module builds
    distributions: tuple[str, ...] = ()  # pip distributions whose versions a bench report records
    repro: str | None = None  # its repro module (reproducers of its implementations and forms)


REGISTRY: dict[str, FrameworkInfo] = {
    entry.name: entry
    for entry in (
        FrameworkInfo(
            "torch",
            extra="torch",
            probe=("torch",),
            adapter="normcheck.frameworks.torch.adapter",
            forms_module="normcheck.frameworks.torch.forms",
            bench="normcheck.frameworks.torch.bench",
            facts="normcheck.frameworks.torch.facts",
            repro="normcheck.frameworks.torch.repro",
            forms=(
                Form(
                    "torch_function",
                    "torch",
                    "torch",
                    "a PyTorch function with the signature of the torch.nn.functional op",
                    FUNCTION,
                ),
                Form(
                    "torch_module",
                    "torch",
                    "torch",
                    "a torch.nn.Module subclass with the constructor of the torch.nn layer",
                    CLASS,
                    base="torch.nn.Module",
                    base_from="torch.nn",
                ),
            ),
            distributions=("torch",),
        ),
        FrameworkInfo(
            "tensorflow",
            extra="tensorflow",
            probe=("tensorflow", "keras"),
            adapter="normcheck.frameworks.tensorflow.adapter",
            forms_module="normcheck.frameworks.tensorflow.forms",
            bench="normcheck.frameworks.tensorflow.bench",
            facts="normcheck.frameworks.tensorflow.facts",
            repro="normcheck.frameworks.tensorflow.repro",
            forms=(
                Form(
                    "keras_layer",
                    "tensorflow",
                    "tensorflow",
                    "a keras.layers.Layer subclass with the constructor of the Keras layer, channels-last",
                    CLASS,
                    base="keras.layers.Layer",
                    base_from="keras",
                ),
                Form(
                    "tf_function",
                    "tensorflow",
                    "tensorflow",
                    "a TensorFlow function (eager or tf.function) called by its parameters' names, channels-last",
                    FUNCTION,
                ),
            ),
            distributions=("tensorflow", "tensorflow-cpu", "keras"),
        ),
        FrameworkInfo(
            "jax",
            extra="jax",
            probe=("jax", "flax"),
            adapter="normcheck.frameworks.jax.adapter",
            forms_module="normcheck.frameworks.jax.forms",
            bench="normcheck.frameworks.jax.bench",
            facts="normcheck.frameworks.jax.facts",
            repro="normcheck.frameworks.jax.repro",
            forms=(
                Form(
                    "jax_function",
                    "jax",
                    "torch",
                    "a JAX function with the signature of the torch.nn.functional op, channels-first",
                    FUNCTION,
                ),
                Form(
                    "flax_module",
                    "jax",
                    "jax",
                    "a flax.linen.Module subclass with the fields of the Flax layer, channels-last",
                    CLASS,
                    base="flax.linen.Module",
                    base_from="flax.linen",
                ),
            ),
            distributions=("jax", "jaxlib", "flax"),
        ),
        FrameworkInfo(
            "onnxruntime",
            extra="onnxruntime",
            probe=("onnxruntime", "onnx"),
            adapter="normcheck.frameworks.onnxruntime.adapter",
            forms_module=None,
            bench="normcheck.frameworks.onnxruntime.bench",
            facts="normcheck.frameworks.onnxruntime.facts",
            repro="normcheck.frameworks.onnxruntime.repro",
            distributions=("onnxruntime", "onnxruntime-gpu", "onnx"),
        ),
        FrameworkInfo(
            "numpy",
            extra=None,
            probe=("numpy",),
            adapter=None,  # bench times the reference formulas; verify has nothing to check
            forms_module="normcheck.frameworks.numpy.forms",
            bench="normcheck.frameworks.numpy.bench",
            facts="normcheck.frameworks.numpy.facts",
            repro="normcheck.frameworks.numpy.repro",
            forms=(
                Form(
                    "cs231n",
                    "numpy",
                    "cs231n",
                    "NumPy forward/backward functions in the CS231n assignment-2 convention",
                    STYLE,
                    dtypes=("float64", "float32"),  # why: normcheck.frameworks.numpy.forms
                ),
            ),
            distributions=("numpy",),
        ),
    )
}

# The frameworks with built-in implementations to verify (normcheck verify --framework)
FRAMEWORKS: dict[str, FrameworkInfo] = {name: e for name, e in REGISTRY.items() if e.adapter is not None}
# Every user form, by id (normcheck.user.FORMS)
FORMS: dict[str, Form] = {form.id: form for entry in REGISTRY.values() for form in entry.forms}

# name -> op -> Convention, from every facts module: each framework's own (under its name) and
# conventions that are no framework's (the CS231n assignment's, "cs231n", from numpy's). Assembled
# on first use (``__getattr__``), so reading the registry imports nothing.
CONVENTIONS: dict[str, dict[str, Convention]]


def is_installed(name: str) -> bool:
    return all(importlib.util.find_spec(mod) is not None for mod in REGISTRY[name].probe)


def installed() -> list[str]:
    """The frameworks with built-in implementations that are installed."""
    return [name for name in FRAMEWORKS if is_installed(name)]


def load(name: str) -> Framework:
    """Import the adapter (and with it the framework) and return it."""
    adapter = REGISTRY[name].adapter
    if adapter is None:
        raise ValueError(f"{name} has no built-in implementations to verify")
    return cast("AdapterModule", importlib.import_module(adapter)).framework()


def bench_module(name: str) -> BenchModule:
    """The framework's bench module (importing it loads the framework)."""
    return cast("BenchModule", importlib.import_module(REGISTRY[name].bench))


def forms_module(name: str) -> FormsModule:
    """The framework's forms module (importing it loads the framework)."""
    module = REGISTRY[name].forms_module
    if module is None:
        raise ValueError(f"{name} has no user forms")
    return cast("FormsModule", importlib.import_module(module))


def facts_module(name: str) -> FactsModule:
    """The framework's facts module (imports no framework)."""
    return cast("FactsModule", importlib.import_module(REGISTRY[name].facts))


def repro_module(name: str) -> ReproModule:
    """The framework's repro module (imports no framework)."""
    module = REGISTRY[name].repro
    if module is None:
        raise ValueError(f"{name} has no reproducers")
    return cast("ReproModule", importlib.import_module(module))


def _conventions() -> dict[str, dict[str, Convention]]:
    table: dict[str, dict[str, Convention]] = {}
    for name in REGISTRY:
        for conventions, by_op in facts_module(name).CONVENTIONS.items():
            if conventions in table:
                raise RuntimeError(f"conventions {conventions!r} are declared twice")
            table[conventions] = dict(by_op)
    return table


def __getattr__(attr: str) -> Any:
    if attr == "CONVENTIONS":
        table = globals()["CONVENTIONS"] = _conventions()
        return table
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
