"""The model a user names: a model file (by suffix) or a SPEC (``path/to/file.py:NAME`` or
``pkg.mod:NAME``), checked in the parent without importing the framework or the user's code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from normcheck.errors import UsageError
from normcheck.user.spec import ImplSpec, SpecError, parse_spec

# Model files by suffix: the loader that reads them (see normcheck.model.loaders)
ONNX, TORCHSCRIPT, TORCH_EXPORT, KERAS = "onnx", "torchscript", "torch.export", "keras"
FILE_LOADERS = {
    ".onnx": ONNX,
    ".pt": TORCHSCRIPT,
    ".pth": TORCHSCRIPT,
    ".ts": TORCHSCRIPT,
    ".pt2": TORCH_EXPORT,
    ".keras": KERAS,
}
FILE_KINDS = ".onnx (ONNX), .pt (TorchScript), .pt2 (torch.export) or .keras"


@dataclass(frozen=True)
class ModelSource:
    """What the worker loads: a file with its loader, or an object a SPEC names."""

    text: str  # as the user wrote it
    path: str | None = None  # absolute path of a model file
    loader: str | None = None  # the file's loader (FILE_LOADERS)
    spec: ImplSpec | None = None  # a Python object: a model, a model class or a factory
    input_shape: tuple[int, ...] | None = None  # an example input's shape, where one is known

    @property
    def label(self) -> str:
        return self.text


def resolve_source(text: str) -> ModelSource:
    """The model ``text`` names; UsageError (one line) for a missing file, an unknown file kind or
    a malformed SPEC. Nothing is imported or read beyond the file system's metadata."""
    text = text.strip()
    if not text:
        raise UsageError("no model given; write path/to/model.onnx, path/to/file.py:NAME or package.module:NAME")
    suffix = Path(text).suffix.lower()
    if ":" not in Path(text).name:
        if suffix == ".py":
            raise UsageError(f"{text}: name the model, its class or a function building it: {text}:NAME")
        if suffix in FILE_LOADERS or Path(text).expanduser().exists():
            return _model_file(text, suffix)
        raise UsageError(
            f"{text!r} is neither a model file ({FILE_KINDS}) nor a SPEC (path/to/file.py:NAME or package.module:NAME)"
        )
    try:
        spec = parse_spec(text)
    except SpecError as e:
        raise UsageError(str(e).replace("implementation", "model")) from None
    if spec.is_path:
        path = Path(spec.target).expanduser()
        if not path.exists():
            raise UsageError(f"{text}: no such file {spec.target}")
        if not path.is_file():
            raise UsageError(f"{text}: {spec.target} is not a file")
    return ModelSource(text, spec=spec)


def _model_file(text: str, suffix: str) -> ModelSource:
    path = Path(text).expanduser()
    if not path.exists():
        raise UsageError(f"{text}: no such file")
    if path.is_dir():
        raise UsageError(f"{text} is a folder; give a model file ({FILE_KINDS})")
    loader = FILE_LOADERS.get(suffix)
    if loader is None:
        raise UsageError(
            f"{text}: unknown kind of model file {suffix!r}; give {FILE_KINDS}, or the code "
            "building the model as path/to/file.py:NAME"
        )
    return ModelSource(text, path=str(path.resolve()), loader=loader)
