"""PyTorch's OpInfo sample inputs for the normalization functionals, run through the reference.

Each sample of ``torch.testing._internal.common_methods_invocations.op_db``'s
``nn.functional.{batch_norm, layer_norm, group_norm, instance_norm, rms_norm}`` (CPU, float64
and float32, the degenerate ones included: empty batches, one value per statistic, negative eps
and momentum) is given to PyTorch and to the reference with the same arguments: the outputs and
the running statistics PyTorch updates in place must agree at ``torch.testing.assert_close``'s
tolerance for the dtype. Where PyTorch raises, on a sample or on an op's error inputs, the
reference must raise too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from _require import require

from normcheck.ops.batch_norm import batch_norm
from normcheck.ops.group_norm import group_norm
from normcheck.ops.instance_norm import instance_norm
from normcheck.ops.layer_norm import layer_norm
from normcheck.ops.rms_norm import rms_norm

torch = require("torch")
op_db = require("torch", "torch.testing._internal.common_methods_invocations").op_db

# the OpInfo name -> the reference function, which takes torch.nn.functional's arguments
REFERENCES: dict[str, Callable[..., Any]] = {
    "nn.functional.batch_norm": batch_norm,
    "nn.functional.layer_norm": layer_norm,
    "nn.functional.group_norm": group_norm,
    "nn.functional.instance_norm": instance_norm,
    "nn.functional.rms_norm": rms_norm,
}
# native_layer_norm's error inputs are F.layer_norm's arguments (normalized_shape, weight, bias, eps)
ERROR_INPUTS_OF = {**{name: name for name in REFERENCES}, "native_layer_norm": "nn.functional.layer_norm"}
DTYPES = (torch.float64, torch.float32)
RUNNING = ("running_mean", "running_var")  # updated in place by batch and instance norm


@dataclass
class Sample:
    op: str
    dtype: Any
    index: int
    input: Any
    args: tuple
    kwargs: dict

    @property
    def id(self) -> str:
        return f"{self.op.removeprefix('nn.functional.')}-{str(self.dtype).removeprefix('torch.')}-{self.index}"


def _op_infos(names: set[str]) -> dict[str, Any]:
    """One OpInfo per name (batch norm's "without_cudnn" variant runs the same function)."""
    return {op.name: op for op in op_db if op.name in names and op.variant_test_name == ""}


def samples() -> list[Sample]:
    torch.manual_seed(0)
    out = []
    for name, info in _op_infos(set(REFERENCES)).items():
        for dtype in DTYPES:
            for i, s in enumerate(info.sample_inputs("cpu", dtype, requires_grad=False)):
                out.append(Sample(name, dtype, i, s.input, tuple(s.args), dict(s.kwargs)))
    return out


def error_samples() -> list[tuple[str, Any, str]]:
    """(op, sample, the error PyTorch's OpInfo expects) for each error input of the norms."""
    out = []
    for name, info in _op_infos(set(ERROR_INPUTS_OF)).items():
        if info.error_inputs_func is None:
            continue
        for e in info.error_inputs("cpu"):
            out.append((ERROR_INPUTS_OF[name], e.sample_input, e.error_regex))
    return out


SAMPLES = samples()
ERRORS = error_samples()


def _numpy(value: Any) -> Any:
    """A tensor as a NumPy array of its dtype (a copy: PyTorch updates running statistics in
    place); tuples, lists and dicts element by element; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_numpy(v) for v in value)
    return value


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _running_stats(op: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The running statistics tensors PyTorch updates, by name (positional for batch norm)."""
    if op == "nn.functional.batch_norm":
        return {n: args[i] for i, n in enumerate(RUNNING) if i < len(args) and args[i] is not None}
    return {n: kwargs[n] for n in RUNNING if kwargs.get(n) is not None}


def test_samples_cover_every_norm_and_its_edges():
    ops = {s.op for s in SAMPLES}
    assert ops == set(REFERENCES)
    assert any(0 in s.input.shape for s in SAMPLES)  # empty batches
    assert any(s.input.numel() == 1 for s in SAMPLES)  # one value per statistic
    assert {op for op, _, _ in ERRORS} >= {"nn.functional.group_norm", "nn.functional.rms_norm"}


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_reference_agrees_with_torch_on_the_opinfo_sample(sample):
    args, kwargs = tuple(_clone(a) for a in sample.args), {k: _clone(v) for k, v in sample.kwargs.items()}
    ref_args, ref_kwargs = _numpy(args), _numpy(kwargs)
    function = getattr(torch.nn.functional, sample.op.removeprefix("nn.functional."))
    reference = REFERENCES[sample.op]
    try:
        want = function(sample.input, *args, **kwargs)
    except Exception:  # PyTorch refuses the sample: so must the reference
        with pytest.raises(ValueError):
            reference(_numpy(sample.input), *ref_args, **ref_kwargs)
        return
    got = reference(_numpy(sample.input), *ref_args, **ref_kwargs)
    outputs = {"output": (got[0] if isinstance(got, tuple) else got, want)}
    if isinstance(got, tuple):
        running = _running_stats(sample.op, args, kwargs)
        outputs.update({n: (got[1 + RUNNING.index(n)], t) for n, t in running.items()})
    for name, (ours, theirs) in outputs.items():
        expected = torch.from_numpy(np.asarray(ours, dtype=np.float64)).to(sample.dtype)
        torch.testing.assert_close(theirs, expected, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(("op", "sample", "error"), ERRORS, ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(ERRORS)])
def test_reference_raises_on_the_error_inputs_torch_raises_on(op, sample, error):
    function = getattr(torch.nn.functional, op.removeprefix("nn.functional."))
    with pytest.raises(Exception, match=error):
        function(sample.input, *sample.args, **sample.kwargs)
    with pytest.raises(ValueError):
        REFERENCES[op](_numpy(sample.input), *_numpy(tuple(sample.args)), **_numpy(dict(sample.kwargs)))
