"""Reproducers of the newer kinds in NumPy (``--style cs231n``: adaLN, the fused add + layer norm,
Weight Standardization with ws_gn's group norm written into the script) and ONNX Runtime (the
com.microsoft Skip*Normalization nodes, layer norm without bias, the norm + QuantizeLinear FP8
graph): the snippet computes exactly what the implementation computed, bit for bit, on cases of
each kind, and each module's COVERS is what its implementations run; verify --repro writes
scripts that reproduce a failure of these kinds without normcheck."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from _mirror import assert_mirrors, problem_and_call, run_snippet
from _require import require
from _scripts import assert_standalone, run_scripts

import normcheck
from normcheck import frameworks as registry
from normcheck.frameworks.base import Framework
from normcheck.ops import OPS
from normcheck.ops.quantize import QUANTIZED_CHECK, ROW, STATIC, TENSOR, Quantization
from normcheck.repro.call import QUANTIZED_DTYPE, Snippet, UserCode
from normcheck.repro.inputs import case_arrays
from normcheck.repro.user_code import loader
from normcheck.repro.write import uncovered_extensions
from normcheck.user import user_frameworks
from normcheck.user.spec import load_object, parse_spec
from normcheck.verify.records import FAIL, KNOWN
from normcheck.verify.run import missing_extension

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
CS231N = FIXTURES / "cs231n_variants.py"


def mirror_cases(name: str, fw: Framework, op: str, cases, dtypes, script: Path, user=None, load=None) -> int:
    """Each case an implementation of ``fw`` runs: its reproducer is written (COVERS covers it)
    and computes what the implementation does; the cases compared."""
    covers = registry.repro_module(name).COVERS
    ran = 0
    for impl in fw.implementations(op):
        for shape, params in cases:
            for dtype in dtypes:
                problem, call = problem_and_call(fw, impl, op, shape, params, dtype, "contiguous", user)
                if OPS[op].validate(problem.shape, problem.params) or missing_extension(problem, impl):
                    continue
                if assert_mirrors(name, fw, impl, problem, call, script, load):
                    assert not uncovered_extensions(call, covers), call
                    ran += 1
    return ran


def variant(op: str, name: str, n: int = 2):
    return OPS[op].variant_cases(name)[:n]


def quantized(op: str, scale: str, fmt: str = "e4m3", n: int = 2):
    q = Quantization(fmt, scale)
    return [(s, replace(p, quant=q)) for s, p in OPS[op].default_cases()[:n]]


# -- ONNX Runtime: the built-in implementations ----------------------------------------------

# kind -> (op, cases, dtypes)
ORT = {
    "add_rms": ("add_rms", OPS["add_rms"].default_cases()[:3], ("float32", "float16")),
    "add_ln": ("add_ln", OPS["add_ln"].default_cases()[:3], ("float32", "float16")),
    "add_ln nobias": ("add_ln", variant("add_ln", "nobias"), ("float32",)),
    "ln nobias": ("ln", variant("ln", "nobias"), ("float32", "float16")),
    "fp8 row": ("rms", quantized("rms", ROW), ("float32", "float16")),
    "fp8 tensor": ("ln", quantized("ln", TENSOR, "e5m2"), ("float32",)),
    "fp8 static": ("rms", quantized("rms", STATIC), ("float32",)),
    "fp8 static layer norm": ("ln", quantized("ln", STATIC, "e5m2"), ("float32",)),
}


@pytest.mark.parametrize("kind", list(ORT))
def test_an_onnxruntime_reproducer_runs_each_kind_as_the_adapter(kind, tmp_path):
    require("onnxruntime")
    op, cases, dtypes = ORT[kind]
    fw = registry.load("onnxruntime")
    assert mirror_cases("onnxruntime", fw, op, cases, dtypes, tmp_path / "r.py") >= 2


def test_an_onnxruntime_fp8_reproducer_reads_q_in_the_adapters_dtype(tmp_path):
    require("onnxruntime")
    fw = registry.load("onnxruntime")
    [impl] = [i for i in fw.implementations("rms") if i.requires]
    shape, params = quantized("rms", ROW, "e5m2", 1)[0]
    problem, call = problem_and_call(fw, impl, "rms", shape, params, "float32", "contiguous")
    want = impl.run(problem, "contiguous", "cpu")
    snippet = registry.repro_module("onnxruntime").snippet(call)
    assert isinstance(snippet, Snippet), snippet
    got = run_snippet(snippet, case_arrays(problem), tmp_path / "r.py")
    assert got[QUANTIZED_DTYPE] == want.dtypes[QUANTIZED_CHECK] == "float8_e5m2"


def test_the_onnxruntime_reproducers_names_are_the_adapters():
    require("onnxruntime")
    from normcheck.frameworks.onnxruntime import adapter, quantized

    repro = registry.repro_module("onnxruntime")
    assert repro.SKIP_OPS == adapter.SKIP_OPS
    assert (repro.QUANTIZED_OPSET, repro.SCALE) == (quantized.OPSET, quantized.SCALE)
    assert {k: getattr(quantized.TensorProto, v) for k, v in repro.FP8_TYPES.items()} == quantized.FP8_TYPES
    names = {i.name for op in ("ln", "rms") for i in registry.load("onnxruntime").implementations(op) if i.requires}
    assert names == {f"onnx.{n}{repro.QUANTIZE_LINEAR}" for n in ("LayerNormalization", "RMSNormalization")}


# -- NumPy: --style cs231n pairs of fixtures/cs231n_variants.py ------------------------------


def without_affine(op: str):
    """The op's first default case without its affine parameters."""
    shape, params = OPS[op].default_cases()[0]
    return [(shape, replace(params, affine=False))]


# kind -> (forward, backward, op, cases, dtypes)
NUMPY = {
    "adaln": ("adaln_forward", "adaln_backward", "adaln", OPS["adaln"].default_cases()[:2], ("float32", "float16")),
    "add_ln": (
        "add_layernorm_forward",
        "add_layernorm_backward",
        "add_ln",
        OPS["add_ln"].default_cases()[:1] + without_affine("add_ln"),
        ("float32", "float64"),
    ),
    "ws": ("ws_conv_forward", "ws_conv_backward", "ws", OPS["ws"].default_cases()[:3], ("float32", "float16")),
    "ws paper": ("ws_conv_forward", "ws_conv_backward", "ws", variant("ws", "paper"), ("float32",)),
    "ws_gn": (
        "ws_conv_forward",
        "ws_conv_backward",
        "ws_gn",
        OPS["ws_gn"].default_cases()[1:4] + without_affine("ws_gn"),  # G = C, N = 1, no affine too
        ("float32", "float16", "float64"),
    ),
}


@pytest.mark.parametrize("kind", list(NUMPY))
def test_a_numpy_reproducer_calls_each_kind_of_cs231n_pair_as_normcheck(kind, tmp_path):
    forward, backward, op, cases, dtypes = NUMPY[kind]
    spec, backward_spec = f"{CS231N}:{forward}", f"{CS231N}:{backward}"
    obj, back = load_object(parse_spec(spec)), load_object(parse_spec(backward_spec))
    load = loader(spec, backward_spec, tmp_path, ROOT)
    assert not isinstance(load, str), load
    ran = styles = 0
    for fw in user_frameworks(forward, obj, "cs231n", back):  # explicit options, then the defaults
        user = UserCode("cs231n", fw.omit_defaults)
        ran += mirror_cases("numpy", fw, op, cases, dtypes, tmp_path / "r.py", user, load)
        styles += 1
    assert styles == 2 and ran >= 2 * styles, (styles, ran)


# -- end to end: verify --repro, the scripts run without normcheck ----------------------------

# kind -> (op, the forward and backward in cs231n_variants.py (None: built in), options, the
# scripts (a glob), their exit status)
END_TO_END = {
    "numpy adaln": (
        "adaln",
        "adaln_forward_no_offset",
        "adaln_backward",
        {"shapes": [(2, 5, 33)]},
        "user_adaln_forward_no_offset_adaln_forward_*.py",
        1,
    ),
    "numpy add_ln": (
        "add_ln",
        "add_layernorm_forward_stale_residual",
        "add_layernorm_backward_stale_residual",
        {"shapes": [(4, 16)], "normalized_ndim": 1},
        "user_add_layernorm_forward_stale_residual_*add_ln_residual_out_*.py",
        1,
    ),
    "numpy ws_gn": (
        "ws_gn",
        "ws_conv_forward",
        "ws_conv_backward_grad_cut_mean",
        {"shapes": [(2, 6, 5, 5)], "groups": [3]},
        "user_ws_conv_forward_*ws_gn_grad_weight_*.py",
        1,
    ),
    "onnxruntime add_ln (known defect)": (
        "add_ln",
        None,
        None,
        {"framework": "onnxruntime", "dtypes": "float16", "kinds": "large_mean", "shapes": [(2, 5, 33)]},
        "onnxruntime_com.microsoft.SkipLayerNormalization_add_ln_forward_known_defect_*.py",
        1,
    ),
    # the scale the graph returns, doubled in normcheck's run (wrong_fp8_scale), fails the scale
    # and the values judged by it: the scripts run the real graph, whose scale and values are right
    "onnxruntime fp8 (a kernel fixed since)": (
        "rms",
        None,
        None,
        {"framework": "onnxruntime", "quantize": "e4m3", "shapes": [(2, 5, 33)], "normalized_ndim": 1},
        "onnxruntime_onnx.RMSNormalization_QuantizeLinear_rms_*.py",
        0,
    ),
}


def wrong_fp8_scale(monkeypatch) -> None:
    """ORT's FP8 graph returns twice its scale in this process (the cases run inline)."""
    from normcheck.frameworks.onnxruntime.quantized import OrtQuantizedImplementation

    run = OrtQuantizedImplementation.run

    def doubled(self, problem, layout, device):
        out = run(self, problem, layout, device)
        out.values["scale"] = out.values["scale"] * 2
        return out

    monkeypatch.setattr(OrtQuantizedImplementation, "run", doubled)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> dict[str, list]:
    """kind -> [(script, its run, the row's error as the index gives it)], every script run in
    one fresh interpreter without normcheck."""
    found = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for kind, (op, forward, backward, options, pattern, _) in END_TO_END.items():
            if "onnxruntime" in kind:
                require("onnxruntime")
            if "fp8" in kind:
                wrong_fp8_scale(monkeypatch)
            user = {"style": "cs231n", "backward": f"{CS231N}:{backward}"} if forward else {}
            impl = f"{CS231N}:{forward}" if forward else None
            repro = tmp_path_factory.mktemp("repro")
            settings = {"dtypes": "float32", "kinds": "normal", **user, **options}
            report = normcheck.check(op, impl, jobs=1, repro=repro, **settings)
            assert any(r.status in (FAIL, KNOWN) for r in report.results), (kind, report.counts)
            found[kind] = (sorted(repro.glob(pattern)), (repro / "README.md").read_text())
    scripts = [s for found_scripts, _ in found.values() for s in found_scripts]
    ran = iter(run_scripts(scripts, tmp_path_factory.mktemp("elsewhere")))
    return {
        kind: [(s, next(ran), index_error(index, s)) for s in found_scripts]
        for kind, (found_scripts, index) in found.items()
    }


def index_error(index: str, script: Path) -> str:
    """The script's row's max abs error as the index prints it (3 significant digits)."""
    [line] = [line for line in index.splitlines() if line.startswith(f"| [{script.name}]")]
    return line.split(" | ")[7].split(" / ")[0]


@pytest.mark.parametrize("kind", list(END_TO_END))
def test_a_failure_of_each_kind_is_rerun_without_normcheck(kind, reproduced):
    code = END_TO_END[kind][5]
    assert reproduced[kind], END_TO_END[kind][4]
    for script, done, error in reproduced[kind]:
        assert_standalone(script)
        assert done.code == code, done.stdout
        if code:  # the script observes the row's error
            assert f"observed max abs error {error}" in done.stdout, (done.stdout, error)
        else:
            assert "not reproduced:" in done.stdout and "is within tolerance" in done.stdout, done.stdout
