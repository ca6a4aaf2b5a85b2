"""What a framework's repro module is given and what it returns: the call of one implementation
on one case, all but the arrays, and the source text that makes it (see ReproModule in
normcheck.frameworks.base). Imports nothing above the domain's names."""

from __future__ import annotations

import json
from dataclasses import dataclass

from normcheck.names import DtypeName, Layout, OpName
from normcheck.ops import OpParams

# The names a snippet's ``run(data)`` reads from ``data`` (the .npz), those the case has:
# x, dy, weight, bias, running_mean, running_var (initial values) and steps (the training
# batches, stacked). It returns a dict check -> float64 NumPy array in the canonical layout
# (channels at axis 1), as the adapter's RunOutput holds them.
ARRAY_NAMES = ("x", "dy", "weight", "bias", "running_mean", "running_var", "steps")


@dataclass(frozen=True)
class UserCode:
    """How a user implementation is called: its form (normcheck.frameworks.FORMS) and whether the
    optional arguments are left out. The script defines ``IMPL`` (and for a form with two functions
    ``BACKWARD``) before the snippet's code."""

    form: str
    omit_defaults: bool


@dataclass(frozen=True)
class ReproCall:
    """One implementation on one case, all but the arrays."""

    impl: str  # the implementation's name as reports show it
    op: OpName
    shape: tuple[int, ...]
    params: OpParams
    dtype: DtypeName
    layout: Layout
    device: str
    eps: float
    momentum: float  # PyTorch's meaning: the weight of the new batch
    framework_momentum: float | None  # what the API itself is given (None: the op has none)
    user: UserCode | None = None

    @property
    def training(self) -> bool:
        """Whether ``x`` runs on batch statistics (training steps always do)."""
        return self.params.mode == "train" or not self.params.running_stats

    @property
    def normalized_shape(self) -> tuple[int, ...]:
        """Layer and RMS norm: the trailing dims normalized."""
        k = self.params.normalized_ndim
        if k is None:
            raise ValueError(f"{self.op} has no normalized_ndim")
        return self.shape[len(self.shape) - k :]


@dataclass(frozen=True)
class Snippet:
    """The framework's part of a script: import lines, then module-level code defining
    ``run(data) -> dict[str, np.ndarray]``; ``version`` is an expression naming the versions
    that ran it, ``needs`` the pip distributions the script needs besides NumPy."""

    imports: tuple[str, ...]
    code: str
    version: str
    needs: tuple[str, ...]


def block(lines: list[str], depth: int = 1) -> str:
    """``lines`` indented ``depth`` levels, one per line (empty lines stay empty)."""
    pad = "    " * depth
    return "".join(f"{pad}{line}\n" if line else "\n" for line in lines)


def quoted(value: str) -> str:
    """A string literal in double quotes, as formatters write them."""
    return json.dumps(value, ensure_ascii=False)
