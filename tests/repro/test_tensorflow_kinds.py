"""TensorFlow reproducers of every kind verify runs TensorFlow code on: the Keras layers' nobias and
--axes variants (and the raw tf.nn graph's), user Keras layers (Gemma, no bias, --axes, fused add
+ norm, adaLN, Weight Standardization, FP8 output) and the tf_function form's fixed calling
conventions (fused add + norm, adaLN, WS, FP8). The written code, run on the case's arrays,
computes exactly what the adapter or the form computed, bit for bit (an FP8 case's q in the same
dtype); a tf_function of the plain norms, bound by its names, is refused saying why; verify
--repro writes scripts that reproduce a buggy fixture's failure without normcheck."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _mirror import problem_and_call, run_snippet
from _require import require
from _scripts import assert_standalone, run_scripts

require("tensorflow")

import normcheck
from normcheck import frameworks as registry
from normcheck.frameworks.base import Framework, Implementation
from normcheck.frameworks.tensorflow.calls import eps_parameter
from normcheck.ops import OPS, OpParams
from normcheck.ops.layer_norm import axes_cases
from normcheck.ops.quantize import QUANTIZED_CHECK, ROW, STATIC, TENSOR, Quantization
from normcheck.repro.call import QUANTIZED_DTYPE, ReproCall, Snippet, UserCode
from normcheck.repro.inputs import case_arrays
from normcheck.repro.user_code import loader
from normcheck.user import user_frameworks
from normcheck.user.spec import load_object, parse_spec
from normcheck.verify.records import FAIL
from normcheck.verify.run import missing_extension

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
TF = registry.load("tensorflow")
REPRO = registry.repro_module("tensorflow")


def first(op: str, shapes: list[tuple[int, ...]], variant: str | None = None, **changes) -> list:
    """The op's default (or ``variant``'s) cases of ``shapes``, with ``changes`` to their params."""
    found = OPS[op].variant_cases(variant) if variant else OPS[op].default_cases()
    return [(s, replace(p, **changes)) for s, p in found if s in shapes]


def fp8(op: str, scale: str, shapes: list[tuple[int, ...]]) -> list:
    return first(op, shapes, quant=Quantization("e4m3", scale))


NOBIAS = first("ln", [(4, 16), (2, 3, 7, 9)], "nobias")
AXES = [(s, p) for s, p in axes_cases([(1,), (0, 2)], []) if s in ((3, 4, 7), (1, 5, 3, 3))]
GEMMA = first("rms", [(4, 16), (2, 3, 8, 8)], "gemma") + first("rms", [(4, 16)], "gemma", affine=False)


def mirrors(impl: Implementation, problem, call: ReproCall, script: Path, load=None) -> bool:
    """The snippet's outputs are the implementation's, bit for bit, and the same checks (an FP8
    case's q in the same dtype); False when the implementation does not run the case."""
    if OPS[problem.op].validate(problem.shape, problem.params) or missing_extension(problem, impl):
        return False
    if impl.unsupported(problem, call.layout):
        return False
    assert impl.extensions <= REPRO.COVERS, impl.extensions - REPRO.COVERS
    want = impl.run(problem, call.layout, "cpu")
    snippet = REPRO.snippet(call)
    assert isinstance(snippet, Snippet), snippet
    got = run_snippet(snippet, case_arrays(problem), script, load)
    dtype = got.pop(QUANTIZED_DTYPE, None)
    assert set(got) == set(want.values), (call, set(got) ^ set(want.values))
    for check, value in want.values.items():
        np.testing.assert_array_equal(got[check], value, err_msg=f"{check} of {call}")
    assert dtype == want.dtypes.get(QUANTIZED_CHECK), call
    return True


def mirror_all(fw: Framework, cases: dict[str, list], dtypes, script: Path, user=None, load=None) -> int:
    """How many of ``cases`` (op -> cases) each implementation of ``fw`` ran as its reproducer does."""
    ran = 0
    for op, found in cases.items():
        for impl in fw.implementations(op):
            for (shape, params), dtype in ((c, d) for c in found for d in dtypes):
                for layout in impl.layouts(shape):
                    problem, call = problem_and_call(fw, impl, op, shape, params, dtype, layout, user)
                    ran += mirrors(impl, problem, call, script, load)
    return ran


def test_the_keras_layer_and_raw_graph_variants_run_as_the_adapter(tmp_path):
    # keras.layers.LayerNormalization(center=False / axis=[...]) and the raw tf.nn graphs
    cases = NOBIAS + AXES
    assert mirror_all(TF, {"ln": cases}, ("float32", "float16"), tmp_path / "r.py") == 3 * len(cases) * 2


ADD_RMS = first("add_rms", [(4, 16), (2, 3, 7, 9)])
ADALN = first("adaln", [(3, 3, 8), (3, 1, 12)])
WS = {"ws": first("ws", [(1, 6, 5, 5), (2, 3, 7, 5)]), "ws_gn": first("ws_gn", [(2, 5, 6, 6)], groups=3)}
FP8_RMS = fp8("rms", ROW, [(4, 16)]) + fp8("rms", STATIC, [(2, 5, 33)])
# kind -> (fixture file, name -> (op -> cases))
USER = {
    "keras gemma, nobias, axes": (
        "keras_layers.py",
        {"GemmaRMSNorm": {"rms": GEMMA}, "LayerNorm": {"ln": NOBIAS + AXES}},
    ),
    "keras fused, adaln": (
        "keras_fused_adaln.py",
        {
            "FusedAddRMSNorm": {"add_rms": ADD_RMS},
            "AdaLayerNorm": {"adaln": ADALN},
            "AdaLayerNormAffine": {"adaln": ADALN},
        },
    ),
    "function fused, adaln": (
        "tf_functions.py",
        {
            "fused_add_rms_norm": {"add_rms": ADD_RMS},
            "fused_add_layer_norm": {"add_ln": first("add_ln", [(4, 16)]) + first("add_ln", [(2, 3, 7, 9)], "nobias")},
            "adaln": {"adaln": ADALN},
            "adaln_fixed_eps": {"adaln": ADALN},
        },
    ),
    "ws": ("tf_ws.py", {"StdConv2D": WS, "std_conv2d": WS, "std_conv2d_graph": WS}),
    "fp8": (
        "tf_fp8_norms.py",
        {
            "RMSNormFP8": {"rms": FP8_RMS},
            "LayerNormFP8": {"ln": fp8("ln", ROW, [(2, 5, 33)]) + fp8("ln", STATIC, [(4, 16)])},
            "rms_norm_fp8": {"rms": FP8_RMS[:1]},
            "rms_norm_fp8_compiled": {"rms": FP8_RMS[:1]},
            "rms_norm_fp8_per_tensor": {"rms": fp8("rms", TENSOR, [(4, 16)])},
            "rms_norm_fp8_static": {"rms": FP8_RMS[1:]},
            "layer_norm_fp8": {"ln": fp8("ln", ROW, [(4, 16)])},
            "layer_norm_fp8_static": {"ln": fp8("ln", STATIC, [(4, 16)])},
        },
    ),
}


@pytest.mark.parametrize("kind", list(USER))
def test_a_reproducer_calls_user_code_as_its_form(kind, tmp_path):
    file, names = USER[kind]
    for name, cases in names.items():
        spec = f"{FIXTURES / file}:{name}"
        obj = load_object(parse_spec(spec))
        load = loader(spec, None, tmp_path, ROOT)
        assert not isinstance(load, str), load
        form = "keras_layer" if isinstance(obj, type) else "tf_function"
        ran = 0
        for fw in user_frameworks(name, obj, form):
            ran += mirror_all(fw, cases, ("float32",), tmp_path / "r.py", UserCode(form, fw.omit_defaults), load)
        assert ran >= 2, (name, ran)


def test_a_function_bound_by_its_names_is_refused_saying_why():
    params = OpParams(groups=2, normalized_ndim=None)
    call = ReproCall("f", "gn", (2, 4, 3, 3), params, "float32", "channels_last", "cpu", 1e-5, 0.1, None)
    refused = REPRO.snippet(replace(call, user=UserCode("tf_function", False)))
    assert isinstance(refused, str) and "parameters' names" in refused and "tf_function" in refused
    assert isinstance(REPRO.snippet(replace(call, user=UserCode("keras_layer", False))), Snippet)


class Named:
    def __init__(self, filters, epsilon=1e-3, **kwargs):
        pass


class KeywordOnly:
    def __init__(self, *, variance_epsilon=1e-6):
        pass


class CatchAll:
    def __init__(self, *args, **kwargs):
        pass


@pytest.mark.parametrize("cls", [Named, KeywordOnly, CatchAll, len])
def test_the_scripts_eps_parameter_is_normchecks(cls):
    namespace: dict = {"inspect": inspect}
    exec(REPRO.EPS_PARAMETER_TEXT, namespace)
    assert namespace["eps_parameter"](cls) == eps_parameter(cls)


# -- end to end: verify --repro on buggy fixtures, the scripts run without normcheck ---------

# kind -> (op, implementation, options, the script (a glob))
BUGGY = {
    "fused function": (
        "add_rms",
        "tf_functions.py:fused_add_rms_norm_stale_residual",
        {"shapes": [(4, 16)], "normalized_ndim": 1},
        "user_fused_add_rms_norm_stale_residual_add_rms_residual_out_*.py",
    ),
    "adaln layer": (
        "adaln",
        "keras_fused_adaln.py:AdaLayerNormAffine",
        {"shapes": [(2, 3, 8)]},
        "user_AdaLayerNormAffine_adaln_forward_*.py",
    ),
    "fp8 function": (
        "rms",
        "tf_fp8_norms.py:rms_norm_fp8_fnuz_max",
        {"quantize": "e4m3", "shapes": [(2, 5, 33)], "normalized_ndim": 1},
        "user_rms_norm_fp8_fnuz_max_rms_scale_*.py",
    ),
}


def test_failures_of_each_kind_reproduce_without_normcheck(tmp_path):
    scripts = []
    for kind, (op, impl, options, pattern) in BUGGY.items():
        repro = tmp_path / kind.replace(" ", "_")
        report = normcheck.check(
            op, f"{FIXTURES}/{impl}", framework="tensorflow", jobs=1, repro=repro, dtypes="float32", **options
        )
        assert any(r.status == FAIL for r in report.results), (kind, report.counts)
        assert "Failures without a reproducer" not in (repro / "README.md").read_text(), kind
        found = sorted(repro.glob(pattern))
        assert found, (kind, sorted(p.name for p in repro.iterdir()))
        scripts.append(found[0])
    for script, done in zip(scripts, run_scripts(scripts, tmp_path), strict=True):
        assert_standalone(script)
        assert done.code == 1 and "reproduced:" in done.stdout, (script.name, done.stdout)
