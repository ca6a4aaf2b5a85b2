"""JAX reproducers of every kind JAX code is run on beyond the plain ops: the op variants (gemma,
nobias, layer norm over given axes), fused add + norm, adaLN, Weight Standardization and FP8
output, for JAX functions and Flax modules (and Flax's own LayerNorm). The snippet computes
exactly what the form (or the adapter) computed, bit for bit; the text the scripts carry in place
of normcheck's own code behaves as that code; verify --repro writes scripts that reproduce a
buggy fixture's failure without normcheck."""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _mirror import problem_and_call, run_snippet
from _require import require
from _scripts import assert_standalone, run_scripts

require("jax")

import jax
import jax.numpy as jnp

import normcheck
from normcheck import frameworks as registry
from normcheck.frameworks.base import Framework, Implementation
from normcheck.frameworks.jax import forms
from normcheck.frameworks.jax import repro as jax_repro
from normcheck.ops import OPS
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.layer_norm import axes_cases
from normcheck.ops.quantize import QUANTIZED_CHECK, ROW, STATIC, Quantization
from normcheck.repro.bindings import modulation_text
from normcheck.repro.call import QUANTIZED_DTYPE, Snippet, UserCode
from normcheck.repro.inputs import case_arrays
from normcheck.repro.user_code import loader
from normcheck.user import user_frameworks
from normcheck.user.modulation import bind_modulation
from normcheck.user.spec import load_object, parse_spec
from normcheck.verify.records import FAIL
from normcheck.verify.run import missing_extension

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
FUNCTIONS, MODULES = "jax_functions.py", "flax_modules.py"


def mirrors(fw: Framework, impl: Implementation, case: tuple, script: Path, user=None, load=None) -> bool:
    """The snippet's outputs are the implementation's on ``case`` (op, shape, params, dtype,
    layout), bit for bit, the same checks (an FP8 case's q in the same dtype); False when verify
    would not run the case (the defaults call style may leave out a weight the case needs)."""
    problem, call = problem_and_call(fw, impl, *case, user)
    if OPS[problem.op].validate(problem.shape, problem.params) or missing_extension(problem, impl):
        return False
    if impl.unsupported(problem, call.layout):
        return False
    want = impl.run(problem, call.layout, "cpu")
    snippet = registry.repro_module("jax").snippet(call)
    assert isinstance(snippet, Snippet), snippet
    got = run_snippet(snippet, case_arrays(problem), script, load)
    assert got.pop(QUANTIZED_DTYPE, None) == want.dtypes.get(QUANTIZED_CHECK), call
    assert set(got) == set(want.values), (call, set(got) ^ set(want.values))
    for check, value in want.values.items():
        np.testing.assert_array_equal(got[check], value, err_msg=f"{check} of {call}")
    return True


def first(op: str, variant: str | None = None, n: int = 1, **changes) -> list[tuple]:
    """The op's first ``n`` default (or variant) cases, with ``changes`` to their params."""
    cases = OPS[op].variant_cases(variant) if variant else OPS[op].default_cases()
    return [(s, replace(p, **changes)) for s, p in cases[:n]]


def quantized(op: str, scale: str) -> list[tuple]:
    return first(op, quant=Quantization("e4m3", scale))


# kind -> (fixture file, name, op, (shape, params) cases)
USER = {
    "gemma function": (FUNCTIONS, "gemma_rms_norm", "rms", first("rms", "gemma")),
    "nobias function": (FUNCTIONS, "layer_norm", "ln", first("ln", "nobias")),
    "gemma module": (MODULES, "GemmaRMSNorm", "rms", first("rms", "gemma")),
    "nobias module": (MODULES, "LayerNorm", "ln", first("ln", "nobias")),
    "axes module": (MODULES, "LayerNorm", "ln", axes_cases([(1,)], [(2, 3, 4, 5)])),
    "add_rms": (FUNCTIONS, "fused_add_rms_norm", "add_rms", first("add_rms")),
    "add_ln": (FUNCTIONS, "fused_add_layer_norm", "add_ln", first("add_ln", "nobias")),
    "add_rms module": (MODULES, "FusedAddRMSNorm", "add_rms", first("add_rms", affine=False)),
    "add_ln module": (MODULES, "FusedAddLayerNorm", "add_ln", first("add_ln")),
    "adaln": (FUNCTIONS, "adaln", "adaln", first("adaln")),
    "adaln module": (MODULES, "AdaLayerNormAffine", "adaln", first("adaln")),
    "ws": (FUNCTIONS, "ws_conv", "ws", first("ws")),
    "ws_gn": (FUNCTIONS, "ws_conv", "ws_gn", first("ws_gn", groups=3)),
    "ws module": ("flax_ws.py", "StandardizedConv", "ws", first("ws")),
    "ws_gn module": ("flax_ws.py", "StandardizedConv", "ws_gn", first("ws_gn", groups=3)),
    "fp8": (FUNCTIONS, "rms_norm_fp8", "rms", quantized("rms", ROW)),
    "fp8 layer norm": (FUNCTIONS, "layer_norm_fp8", "ln", quantized("ln", ROW)),
    "fp8 static": (FUNCTIONS, "rms_norm_fp8_static", "rms", quantized("rms", STATIC)),
    "fp8 module": ("flax_fp8.py", "RMSNormFP8", "rms", quantized("rms", ROW)),
    "fp8 static module": ("flax_fp8.py", "RMSNormFP8Static", "rms", quantized("rms", STATIC)),
    "fp8 layer norm module": ("flax_fp8.py", "LayerNormFP8", "ln", quantized("ln", ROW)),
}
# the kinds whose call the defaults call style changes (eps left out): run in both styles, the
# others in the explicit one (test_mirror.py runs the plain ops' calls in both)
BOTH_STYLES = {"adaln module", "ws", "ws_gn", "ws module", "ws_gn module"}


@pytest.mark.parametrize("kind", list(USER))
def test_a_reproducer_runs_each_kind_of_jax_code_as_its_form(kind, tmp_path):
    file, name, op, cases = USER[kind]
    spec = f"{FIXTURES / file}:{name}"
    obj = load_object(parse_spec(spec))
    load = loader(spec, None, tmp_path, ROOT)
    assert not isinstance(load, str), load
    form = "flax_module" if isinstance(obj, type) else "jax_function"
    ran = 0
    for fw in user_frameworks(name, obj, form)[: 2 if kind in BOTH_STYLES else 1]:
        [impl] = fw.implementations(op)
        for shape, params in cases:
            case = (op, shape, params, "float32", impl.layouts(shape)[0])
            ran += mirrors(fw, impl, case, tmp_path / "r.py", UserCode(form, fw.omit_defaults), load)
    assert ran == len(cases) * (2 if kind in BOTH_STYLES else 1), ran


def test_a_reproducer_runs_flax_layer_norm_without_bias_and_over_given_axes(tmp_path):
    fw = registry.load("jax")
    cases = [*first("ln", "nobias"), *axes_cases([(1, 3)], [(2, 3, 4, 5)])]
    ran = 0
    for impl in fw.implementations("ln"):
        for shape, params in cases:
            ran += mirrors(fw, impl, ("ln", shape, params, "float32", "contiguous"), tmp_path / "r.py")
    assert ran == 4


def test_the_jax_reproducers_cover_every_extension_jax_code_is_run_on():
    forms_classes = [c for c in vars(forms).values() if isinstance(c, type) and issubclass(c, Implementation)]
    flax_layers = registry.load("jax").implementations("ln")
    declared = {ADALN}.union(*(c.extensions for c in forms_classes), *(i.extensions for i in flax_layers))
    assert declared <= jax_repro.COVERS


# -- the text a script carries in place of normcheck's code behaves as that code -------------


def script_namespace(text: str) -> dict:
    namespace = {"jax": jax, "jnp": jnp, "np": np, "inspect": inspect}
    exec(text, namespace)
    return namespace


@pytest.mark.parametrize(("dtype", "last"), [("float32", False), ("bfloat16", True), ("float16", False)])
def test_the_scripts_group_norm_is_normchecks(dtype, last):
    group_norm = script_namespace(jax_repro.GROUP_NORM.format(eps=jax_repro.GN_EPS))["group_norm"]
    rng = np.random.default_rng(0)
    shape = (2, 5, 5, 6) if last else (2, 6, 5, 5)
    y = jnp.asarray(rng.standard_normal(shape) * 3 + 1, dtype)
    weight, bias = (jnp.asarray(rng.standard_normal(6), dtype) for _ in range(2))
    layout = "channels_last" if last else "contiguous"
    for w, b in ((weight, bias), (None, None)):
        want = forms._group_norm(y, 3, w, b, layout)
        np.testing.assert_array_equal(np.asarray(group_norm(y, 3, w, b, last)), np.asarray(want))


def test_the_scripts_adaln_module_constants_are_normchecks():
    assert jax_repro.WIDTH_FIELDS == forms.WIDTH_FIELDS
    assert jax_repro.STRAY == forms.STRAY


def named(hidden_states, shift_msa, scale_msa, variance_epsilon=1e-6):
    return hidden_states


class Module:
    def __call__(self, x, scale, shift):
        return x


@pytest.mark.parametrize(
    "fn",
    [named, jax.jit(named), jax.jit(lambda a, b, c, d: a), functools.partial(Module.__call__, None)],
)
def test_the_scripts_adaln_binding_is_normchecks(fn):
    binding = script_namespace(modulation_text())["modulation"](fn)
    call = bind_modulation(fn, "fn")
    assert binding == (call.names or None, call.takes_eps)


# -- end to end: verify --repro on buggy JAX fixtures, the scripts run without normcheck -----

# kind -> (op, implementation, options, the script (a glob))
BUGGY = {
    "fused add function": (
        "add_rms",
        f"{FIXTURES}/{FUNCTIONS}:fused_add_rms_norm_stale_residual",
        {"shapes": [(4, 16)], "normalized_ndim": 1},
        "user_fused_add_rms_norm_stale_residual_add_rms_residual_out_*.py",
    ),
    "gemma module": (
        "rms",
        f"{FIXTURES}/{MODULES}:GemmaRMSNormNoOffset",
        {"variant": "gemma", "shapes": [(2, 5, 33)], "normalized_ndim": 1},
        "user_GemmaRMSNormNoOffset_rms_forward_*.py",
    ),
    "fp8 scale module": (
        "rms",
        f"{FIXTURES}/flax_fp8.py:RMSNormFP8FnuzMax",
        {"quantize": "e4m3", "shapes": [(2, 5, 33)], "normalized_ndim": 1},
        "user_RMSNormFP8FnuzMax_rms_scale_*.py",
    ),
    "ws_gn module": (
        "ws_gn",
        f"{FIXTURES}/flax_ws.py:StandardizedConvUnbiased",
        {"shapes": [(2, 6, 5, 5)], "groups": [3]},
        "user_StandardizedConvUnbiased_ws_gn_forward_*.py",
    ),
}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> dict:
    """kind -> (the folder, the scripts of its glob, each script's run), the scripts all run in
    one fresh interpreter without normcheck."""
    runs = {}
    for kind, (op, impl, options, pattern) in BUGGY.items():
        repro = tmp_path_factory.mktemp("repro") / "repro"
        report = normcheck.check(
            op, impl, framework="jax", jobs=1, repro=repro, dtypes="float32", kinds="normal", **options
        )
        assert any(r.status == FAIL for r in report.results), (kind, report.counts)
        runs[kind] = (repro, sorted(repro.glob(pattern)))
    scripts = [script for _, found in runs.values() for script in found]
    done = iter(run_scripts(scripts, tmp_path_factory.mktemp("elsewhere")))
    return {kind: (repro, found, [next(done) for _ in found]) for kind, (repro, found) in runs.items()}


@pytest.mark.parametrize("kind", list(BUGGY))
def test_a_jax_failure_of_each_kind_reproduces_without_normcheck(kind, reproduced):
    repro, scripts, ran = reproduced[kind]
    index = (repro / "README.md").read_text()
    assert "do not cover" not in index, index
    assert scripts, (BUGGY[kind][3], sorted(p.name for p in repro.iterdir()))
    for script, done in zip(scripts, ran, strict=True):
        assert_standalone(script)
        assert done.code == 1, done.stdout
        assert re.search(r"observed max abs error \S+", done.stdout) and "reproduced:" in done.stdout, done.stdout
