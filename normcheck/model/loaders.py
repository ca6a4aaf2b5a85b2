"""Which loader takes a model, and the model loaded: runs in the worker, never in the parent.

A model file goes by its suffix (source.FILE_LOADERS). A SPEC's object goes by its type, read
from its class's bases by name, so no framework is imported to ask: a torch.nn.Module (eager,
TorchScript) or a torch.export ExportedProgram, a Keras model or layer, a Flax linen module with
its variables (a factory returns ``(module, variables)``, optionally with an example input or
its shape as a third item), a Flax nnx module, or an onnx.ModelProto. A class is constructed
with no arguments; a function is called with none and must return one of those. Everything
that keeps a model from loading is a UsageError with one line that says so.
"""

from __future__ import annotations

import importlib
import inspect
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from normcheck.engine import worker as engine_worker
from normcheck.errors import UsageError
from normcheck.model.records import Findings, Inventory
from normcheck.model.source import KERAS, ONNX, TORCH_EXPORT, TORCHSCRIPT, ModelSource
from normcheck.user.spec import LoadError, load_object

# the kinds of model object, and the (module, class) a kind's objects derive from
TORCH, SCRIPT, EXPORT, KERAS_MODEL, LINEN, NNX, ONNX_MODEL = (
    "torch",
    "torchscript",
    "export",
    "keras",
    "linen",
    "nnx",
    "onnx",
)
BASES: tuple[tuple[str, str, str], ...] = (  # (kind, module prefix, class name): the first that matches wins
    (SCRIPT, "torch.jit", "ScriptModule"),
    (TORCH, "torch.nn.modules.module", "Module"),
    (EXPORT, "torch.export.exported_program", "ExportedProgram"),
    (KERAS_MODEL, "keras", "Layer"),
    (LINEN, "flax.linen.module", "Module"),
    (NNX, "flax.nnx", "Module"),
    (ONNX_MODEL, "onnx", "ModelProto"),
)
FRAMEWORKS = {
    TORCH: "torch",
    SCRIPT: "torch",
    EXPORT: "torch",
    KERAS_MODEL: "tensorflow",
    LINEN: "jax",
    NNX: "jax",
    ONNX_MODEL: "onnxruntime",
}
LOADER_NAMES = {
    TORCH: "torch.nn.Module",
    SCRIPT: "TorchScript",
    EXPORT: "torch.export",
    KERAS_MODEL: "Keras",
    LINEN: "Flax linen",
    NNX: "Flax nnx",
    ONNX_MODEL: "ONNX",
}
EXTRAS = {"torch": "torch", "keras": "tensorflow", "onnx": "onnxruntime", "flax": "jax"}
WHAT_WORKS = (
    "a torch.nn.Module, a Keras model, a Flax nnx module, (flax.linen module, variables) or an "
    "onnx.ModelProto, a class of one (built with no arguments) or a function returning one"
)


@dataclass
class Loaded:
    """A model in the worker: its kind (one of BASES') and what inspecting it needs."""

    kind: str
    obj: Any
    name: str  # the model's class, or the ONNX producer
    variables: Any = None  # Flax linen
    example: Any = None  # Flax linen: an example input or its shape, when given
    notes: tuple[str, ...] = ()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _call(what: str, fn: Any) -> Any:
    """Call the user's ``fn()``; whatever it raises, sys.exit included, is one UsageError line."""
    try:
        return fn()
    except SystemExit as e:
        raise UsageError(f"{what} called sys.exit({e.code!r})") from None
    except KeyboardInterrupt:
        if not engine_worker.IN_WORKER:  # in-process (NORMCHECK_INLINE=1), a Ctrl-C is the user's
            raise
        raise UsageError(f"{what} raised KeyboardInterrupt") from None
    except BaseException as e:
        raise UsageError(f"{what} raised {_first_line(e)}") from None


def _need(module: str) -> ModuleType:
    root = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(root, root)
        raise UsageError(f"this model needs {root}, which is not installed; pip install 'normcheck[{extra}]'") from None


def kind_of(obj: Any) -> str | None:
    """The kind of a model object (or of a class's instances), from its bases' names."""
    cls = obj if inspect.isclass(obj) else type(obj)
    try:
        mro = inspect.getmro(cls)
    except Exception:
        return None
    names = [(c.__module__ or "", c.__name__) for c in mro]
    for kind, module, name in BASES:
        if any(m.startswith(module) and n == name for m, n in names):
            return kind
    return None


# ---- files -----------------------------------------------------------------------------------


def _load_file(source: ModelSource) -> Loaded:
    assert source.path is not None
    path = source.path
    name = Path(path).name
    if source.loader == ONNX:
        return _load_onnx(path)
    if source.loader == TORCHSCRIPT:
        torch = _need("torch")
        try:
            model = torch.jit.load(path, map_location="cpu")
        except Exception as e:
            raise UsageError(_torch_save_hint(path) or f"not a TorchScript file ({_first_line(e)})") from None
        return Loaded(SCRIPT, model, str(getattr(model, "original_name", type(model).__name__)))
    if source.loader == TORCH_EXPORT:
        torch = _need("torch")
        try:
            program = torch.export.load(path)
        except Exception as e:
            raise UsageError(f"not a torch.export file ({_first_line(e)})") from None
        return Loaded(EXPORT, program, "ExportedProgram")
    if source.loader == KERAS:
        keras = _need("keras")
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as e:
            raise UsageError(f"not a loadable .keras file ({_first_line(e)})") from None
        return Loaded(KERAS_MODEL, model, type(model).__name__)
    raise UsageError(f"no loader for {name}")


def _torch_save_hint(path: str) -> str:
    """Why a zip that torch.jit.load refuses may be a torch.save file, which normcheck never unpickles."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return ""
    if any(n.endswith("data.pkl") for n in names) and not any("/code/" in n for n in names):
        return (
            "not a TorchScript file but a torch.save file (a state_dict or a pickled module), which normcheck "
            "does not unpickle: save TorchScript (torch.jit.save) or torch.export (.pt2), or give the code "
            "building the model as path/to/file.py:NAME"
        )
    return ""


def _load_onnx(path: str) -> Loaded:
    onnx = _need("onnx")
    notes: tuple[str, ...] = ()
    try:
        model = onnx.load(path)
    except Exception as e:
        try:  # weights in external files that cannot be read: the graph alone still has its layers
            model = onnx.load(path, load_external_data=False)
            notes = (f"external weights not read ({_first_line(e)}): their values are not summarized",)
        except Exception:
            raise UsageError(f"not a readable ONNX file ({_first_line(e)})") from None
    return _onnx_loaded(model, notes=notes)


def _onnx_loaded(model: Any, what: str = "", notes: tuple[str, ...] = ()) -> Loaded:
    if not model.ir_version or not model.HasField("graph") or not model.opset_import:
        raise UsageError(f"{what + ' is ' if what else ''}not an ONNX model (no IR version, graph or opset)")
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return Loaded(ONNX_MODEL, model, producer or "ONNX model", notes=notes)


# ---- objects ---------------------------------------------------------------------------------


def load_model(source: ModelSource) -> Loaded:
    """The model ``source`` names, loaded; UsageError when it cannot be, or is not a model."""
    if source.path is not None:
        return _load_file(source)
    assert source.spec is not None
    try:
        obj = load_object(source.spec)
    except LoadError as e:
        raise UsageError(str(e)) from None
    loaded = _from_object(obj, source.spec.attr)
    if loaded.kind == LINEN and loaded.example is None and source.input_shape is not None:
        loaded.example = source.input_shape
    return loaded


def _from_object(obj: Any, name: str) -> Loaded:
    kind = kind_of(obj)
    if inspect.isclass(obj):
        if kind == LINEN:
            raise UsageError(f"{name} is a flax.linen Module class: give a function returning (module, variables)")
        if kind is None or kind in (EXPORT, ONNX_MODEL):
            raise UsageError(f"{name} is a class but not a model class; give {WHAT_WORKS}")
        return _as_model(_call(f"{name}()", obj), f"{name}()")
    if kind is not None or isinstance(obj, tuple):
        return _as_model(obj, name)
    if callable(obj):
        return _as_model(_call(f"{name}()", obj), f"{name}()")
    raise UsageError(f"{name} is {_a(type(obj).__name__)}, not a model; give {WHAT_WORKS}")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _as_model(obj: Any, what: str) -> Loaded:
    """A model object (a factory's result, an instance), or a UsageError saying what it is instead."""
    if isinstance(obj, tuple) and obj and kind_of(obj[0]) == LINEN:
        if len(obj) not in (2, 3) or not hasattr(obj[1], "get"):
            raise UsageError(
                f"{what} gave a flax.linen module in a tuple of {len(obj)}: return (module, variables) "
                "or (module, variables, example input)"
            )
        return Loaded(LINEN, obj[0], type(obj[0]).__name__, variables=obj[1], example=obj[2] if len(obj) == 3 else None)
    kind = kind_of(obj)
    if kind == LINEN:
        raise UsageError(f"{what} is a flax.linen module without its variables: return (module, variables)")
    if kind == ONNX_MODEL:
        return _onnx_loaded(obj, what)
    if kind is None or inspect.isclass(obj):
        shown = "None" if obj is None else ("a class" if inspect.isclass(obj) else _a(type(obj).__name__))
        raise UsageError(f"{what} is {shown}, not a model; give {WHAT_WORKS}")
    return Loaded(kind, obj, type(obj).__name__)


# ---- inspection ------------------------------------------------------------------------------


def _findings(loaded: Loaded) -> Findings:
    if loaded.kind in (TORCH, SCRIPT):
        from normcheck.model.torch_modules import inspect_modules

        return inspect_modules(loaded.obj, scripted=loaded.kind == SCRIPT)
    if loaded.kind == EXPORT:
        from normcheck.model.torch_export import inspect_program

        return inspect_program(loaded.obj)
    if loaded.kind == KERAS_MODEL:
        from normcheck.model.keras_layers import inspect_keras

        return inspect_keras(loaded.obj)
    if loaded.kind == LINEN:
        from normcheck.model.flax_modules import inspect_linen

        return inspect_linen(loaded.obj, loaded.variables, loaded.example)
    if loaded.kind == NNX:
        from normcheck.model.flax_modules import inspect_nnx

        return inspect_nnx(loaded.obj)
    from normcheck.model.onnx_model import inspect_onnx

    return inspect_onnx(loaded.obj)


def inspect_model(loaded: Loaded, source: str = "") -> Inventory:
    found = _findings(loaded)
    return Inventory(
        source=source,
        framework=FRAMEWORKS[loaded.kind],
        loader=LOADER_NAMES[loaded.kind],
        model=loaded.name,
        layers=tuple(found.layers),
        notes=(*loaded.notes, *found.notes),
        opsets=found.opsets,
    )
