"""Each framework's reproducer code runs a case exactly as normcheck does: its outputs equal the
adapter's (or the user form's) bit for bit, on cases covering every op, layout and setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from _mirror import assert_mirrors, cases, problem_and_call
from _require import require

from normcheck import frameworks as registry
from normcheck.names import OP_NAMES
from normcheck.repro.call import UserCode
from normcheck.repro.user_code import loader
from normcheck.user import user_frameworks
from normcheck.user.spec import load_object, parse_spec

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
# dtypes per framework: a half dtype it runs, and float64 where that is a setting of its own (JAX's x64)
DTYPES = {
    "torch": ("float32", "float16"),
    "onnxruntime": ("float32", "float16"),
    "tensorflow": ("float32", "float16"),
    "jax": ("float64",),
    "numpy": ("float32",),
}
SLOW = {"tensorflow", "jax"}  # seconds per case (compiling)


def marks(framework: str) -> list:
    return [pytest.mark.slow] if framework in SLOW else []


def mirror_builtins(name: str, script, every_case: bool) -> int:
    """Compare every built-in implementation of ``name`` with its reproducer; the cases compared."""
    require(name)
    fw = registry.load(name)
    ran = 0
    for op in OP_NAMES:
        for impl in fw.implementations(op):
            for shape, params in cases(op) if every_case else cases(op)[:1]:
                for dtype in DTYPES[name] if every_case else DTYPES[name][:1]:
                    for layout in impl.layouts(shape):
                        problem, call = problem_and_call(fw, impl, op, shape, params, dtype, layout)
                        ran += assert_mirrors(name, fw, impl, problem, call, script)
    return ran


@pytest.mark.parametrize("name", [n for n in registry.FRAMEWORKS if n not in SLOW])
def test_a_reproducer_runs_each_builtin_implementation_as_the_adapter(name, tmp_path):
    assert mirror_builtins(name, tmp_path / "r.py", every_case=False) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("name", list(registry.FRAMEWORKS))
def test_a_reproducer_runs_every_kind_of_case_as_the_adapter(name, tmp_path):
    assert mirror_builtins(name, tmp_path / "r.py", every_case=True) > 20


_FUNCTIONS = {"gn": "group_norm", "ln": "layer_norm", "bn": "batch_norm", "in": "instance_norm", "rms": "rms_norm"}
_CLASSES = {"gn": "GroupNorm", "ln": "LayerNorm", "bn": "BatchNorm", "in": "InstanceNorm", "rms": "RMSNorm"}
# form -> (fixture file, op -> (implementation, backward or None)); correct implementations all
FORMS = {
    "torch_function": ("torch_functional.py", {op: (n, None) for op, n in _FUNCTIONS.items()}),
    "torch_module": (
        "torch_modules.py",
        {op: (n + ("2d" if op in ("bn", "in") else ""), None) for op, n in _CLASSES.items()},
    ),
    "jax_function": ("jax_functions.py", {op: (n, None) for op, n in _FUNCTIONS.items()}),
    "flax_module": ("flax_modules.py", {op: (n, None) for op, n in _CLASSES.items()}),
    "keras_layer": ("keras_layers.py", {op: (n, None) for op, n in _CLASSES.items()}),
    "cs231n": (
        "cs231n_layers.py",
        {
            "bn": ("batchnorm_forward", "batchnorm_backward"),
            "ln": ("layernorm_forward", "layernorm_backward"),
            "gn": ("spatial_groupnorm_forward", "spatial_groupnorm_backward"),
        },
    ),
}


@pytest.mark.parametrize("form", [pytest.param(f, marks=marks(registry.FORMS[f].framework)) for f in FORMS])
def test_a_reproducer_calls_user_code_as_its_form(form, tmp_path):
    framework = registry.FORMS[form].framework
    if framework != "numpy":
        require(framework)
    file, ops = FORMS[form]
    ran = 0
    for op, (name, backward_name) in ops.items():
        spec = f"{FIXTURES / file}:{name}"
        backward_spec = f"{FIXTURES / file}:{backward_name}" if backward_name else None
        obj = load_object(parse_spec(spec))
        backward = load_object(parse_spec(backward_spec)) if backward_spec else None
        load = loader(spec, backward_spec, tmp_path, ROOT)
        assert not isinstance(load, str), load
        for fw in user_frameworks(name, obj, form, backward):
            for impl in fw.implementations(op):
                for shape, params in cases(op):
                    for layout in impl.layouts(shape):
                        user = UserCode(form, fw.omit_defaults)
                        problem, call = problem_and_call(
                            fw, impl, op, shape, params, DTYPES[framework][0], layout, user
                        )
                        ran += assert_mirrors(framework, fw, impl, problem, call, tmp_path / "r.py", load)
    assert ran >= 4
