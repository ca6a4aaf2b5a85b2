"""Reproducers of the op variants, fused add + norm, adaLN, layer norm over given axes, FP8 output
and Weight Standardization in PyTorch: the snippet computes exactly what the adapter (or the user
form) computed, bit for bit; verify --repro writes scripts that reproduce a buggy fixture's
failure without normcheck, printing the row's error, and nothing for a correct one; the script's
FP8 judge is verify's; other frameworks' rows of these kinds are refused, saying which."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _mirror import problem_and_call, run_snippet
from _require import require
from _scripts import assert_standalone, run_script, run_scripts

require("torch")

import normcheck
from normcheck import frameworks as registry
from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.ops import OPS, OpParams
from normcheck.ops.layer_norm import axes_cases
from normcheck.ops.quantize import (
    FORMATS,
    QUANTIZED_CHECK,
    ROW,
    SCALE_CHECK,
    STATIC,
    TENSOR,
    Quantization,
    Rounding,
    to_fp8,
)
from normcheck.repro.call import QUANTIZED_DTYPE, ReproCall, Snippet, UserCode, extensions
from normcheck.repro.inputs import case_arrays
from normcheck.repro.script import FP8_BITS, QUANTIZED_MAIN, quantized_constants
from normcheck.repro.user_code import loader
from normcheck.repro.write import uncovered_extensions
from normcheck.user import user_frameworks
from normcheck.user.spec import load_object, parse_spec
from normcheck.verify.records import FAIL, KNOWN, PASS, Case, CheckResult
from normcheck.verify.request import Report
from normcheck.verify.run import missing_extension

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
TORCH = registry.load("torch")


def mirrors(fw: Framework, impl: Implementation, problem, call: ReproCall, script: Path, load=None) -> bool:
    """The snippet's outputs are the implementation's, bit for bit, and the same checks (an FP8
    case's q in the same dtype); False when the implementation does not run the case."""
    if OPS[problem.op].validate(problem.shape, problem.params) or missing_extension(problem, impl):
        return False
    if impl.unsupported(problem, call.layout):
        return False
    try:
        want = impl.run(problem, call.layout, "cpu")
    except Unsupported:
        return False
    snippet = registry.repro_module("torch").snippet(call)
    assert isinstance(snippet, Snippet), snippet
    got = run_snippet(snippet, case_arrays(problem), script, load)
    dtype = got.pop(QUANTIZED_DTYPE, None)
    assert set(got) == set(want.values), (call, set(got) ^ set(want.values))
    for check, value in want.values.items():
        np.testing.assert_array_equal(got[check], value, err_msg=f"{check} of {call}")
    if QUANTIZED_CHECK in want.dtypes:
        assert dtype == want.dtypes[QUANTIZED_CHECK], call
    return True


def mirror_cases(fw: Framework, op: str, cases, dtypes, script: Path, user=None, load=None) -> int:
    ran = 0
    for impl in fw.implementations(op):
        for shape, params in cases:
            for dtype in dtypes:
                for layout in impl.layouts(shape):
                    problem, call = problem_and_call(fw, impl, op, shape, params, dtype, layout, user)
                    ran += mirrors(fw, impl, problem, call, script, load)
    return ran


def variant(op: str, name: str, n: int = 3):
    return OPS[op].variant_cases(name)[:n]


def quantized(op: str, scale: str, fmt: str = "e4m3", n: int = 3):
    q = Quantization(fmt, scale)
    return [(s, replace(p, quant=q)) for s, p in OPS[op].default_cases()[:n] if p.affine or op == "rms"]


# -- built-in implementations ---------------------------------------------------------------

BUILT_IN = {
    "nobias": ("ln", variant("ln", "nobias"), ("float32", "float16")),
    "cumulative": ("bn", variant("bn", "cumulative"), ("float32",)),
    "axes": ("ln", axes_cases([(1,), (1, 2, 3), (0, 2)], []), ("float32", "float16")),
    "adaln": ("adaln", OPS["adaln"].default_cases()[:3], ("float32", "float16")),
    "ws": ("ws", OPS["ws"].default_cases()[:3], ("float32", "float16")),
    "ws_gn": ("ws_gn", OPS["ws_gn"].default_cases()[:3], ("float32", "bfloat16")),
    "float32 weight": (
        "rms",
        [(s, replace(p, weight_dtype="float32")) for s, p in OPS["rms"].default_cases()[:2] if p.affine],
        ("float16",),
    ),
}


@pytest.mark.parametrize("kind", list(BUILT_IN))
def test_a_reproducer_runs_the_builtin_implementation_as_the_adapter(kind, tmp_path):
    op, cases, dtypes = BUILT_IN[kind]
    assert mirror_cases(TORCH, op, cases, dtypes, tmp_path / "r.py") >= 2


# -- user code ------------------------------------------------------------------------------

# kind -> (fixture file, names, op, cases)
USER = {
    "gemma": ("llm_norms.py", ("GemmaRMSNorm", "gemma_rms_norm"), "rms", variant("rms", "gemma")),
    "nobias": ("llm_norms.py", ("LayerNormNoBias",), "ln", variant("ln", "nobias")),
    "nobias function": ("torch_functional.py", ("layer_norm",), "ln", variant("ln", "nobias")),
    "cumulative": ("llm_norms.py", ("BatchNormNoneAsDefault",), "bn", variant("bn", "cumulative")),
    "add_rms": ("llm_norms.py", ("fused_add_rms_norm", "FusedAddRMSNorm"), "add_rms", OPS["add_rms"].default_cases()),
    "add_ln": ("llm_norms.py", ("fused_add_layer_norm",), "add_ln", OPS["add_ln"].default_cases()[:4]),
    "add_ln nobias": ("llm_norms.py", ("fused_add_layer_norm",), "add_ln", variant("add_ln", "nobias")),
    "axes": ("axis_norms.py", ("ConvNeXtLayerNorm2d", "TimmLayerNorm2d"), "ln", axes_cases([(1,)], [])[:3]),
    "adaln": (
        "adaln.py",
        ("adaln", "adaln_scale_first", "AdaLayerNorm", "AdaLayerNormAffine", "FinalLayerNorm"),
        "adaln",
        OPS["adaln"].default_cases()[:2],
    ),
    "ws": ("ws_layers.py", ("StdConv2d", "std_conv2d", "BiTStdConv2dHardCoded"), "ws", OPS["ws"].default_cases()[:3]),
    "ws_gn": ("ws_layers.py", ("StdConv2d", "std_conv2d"), "ws_gn", OPS["ws_gn"].default_cases()[:2]),
    "paper": ("ws_layers.py", ("PaperConv2d",), "ws", variant("ws", "paper")),
    "fp8 row": ("fp8_norms.py", ("rms_norm_fp8", "RMSNormFP8"), "rms", quantized("rms", ROW)),
    "fp8 tensor": ("fp8_norms.py", ("rms_norm_fp8_per_tensor",), "rms", quantized("rms", TENSOR)),
    "fp8 static": (
        "fp8_norms.py",
        ("rms_norm_fp8_static", "rms_norm_fp8_static_e5m2"),
        "rms",
        quantized("rms", STATIC) + quantized("rms", STATIC, "e5m2"),
    ),
    "fp8 layer norm": ("fp8_norms.py", ("layer_norm_fp8",), "ln", quantized("ln", ROW)),
}


@pytest.mark.parametrize("kind", list(USER))
def test_a_reproducer_calls_user_code_as_its_form(kind, tmp_path):
    file, names, op, cases = USER[kind]
    ran = 0
    for name in names:
        spec = f"{FIXTURES / file}:{name}"
        obj = load_object(parse_spec(spec))
        load = loader(spec, None, tmp_path, ROOT)
        assert not isinstance(load, str), load
        form = "torch_module" if isinstance(obj, type) else "torch_function"
        for fw in user_frameworks(name, obj, form):
            user = UserCode(form, fw.omit_defaults)
            ran += mirror_cases(fw, op, cases, ("float32",), tmp_path / "r.py", user, load)
    assert ran >= 2 * len(names), ran


# -- the script's FP8 judge is verify's -----------------------------------------------------


def script_main(tmp_path: Path, row: CheckResult, arrays: dict, outputs: dict) -> dict:
    """QUANTIZED_MAIN's namespace, as a script for ``row`` has it with ``arrays`` in its .npz and
    a ``run`` returning ``outputs``."""
    script = tmp_path / f"judge_{len(list(tmp_path.iterdir()))}.py"
    np.savez(script.with_suffix(".npz"), **arrays)
    quant = row.case.params.quant
    assert quant is not None
    text = QUANTIZED_MAIN.format(
        version="''", title="''", check=f"{row.check!r}", dtype="'float32'", **quantized_constants(row, quant)
    )
    namespace = {"np": np, "sys": sys, "Path": Path, "__file__": str(script), "__name__": "judge"}
    exec(text, namespace)
    namespace["run"] = lambda data: outputs
    return namespace


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_the_scripts_fp8_rounding_is_normchecks(fmt, tmp_path):
    import ml_dtypes

    f = FORMATS[fmt]
    assert FP8_BITS[f.dtype] == (ml_dtypes.finfo(f.np_type).nmant, ml_dtypes.finfo(f.np_type).minexp)
    case = Case("rms", "user", "f", (2, 8), OpParams(normalized_ndim=1, quant=Quantization(fmt)), "float32", "normal")
    fp8 = script_main(tmp_path, CheckResult(case, QUANTIZED_CHECK, FAIL), {}, {})["fp8"]
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(20000) * f.max / 4,
            rng.standard_normal(20000) * 2.0 ** rng.integers(-20, 4, 20000),  # subnormals too
            to_fp8(rng.standard_normal(2000) * 8, Rounding(f)) * (1 + 2.0**-12),  # next to ties
            np.array([0.0, -0.0, f.max, -f.max, 2 * f.max, -np.inf, np.inf, np.nan]),
        ]
    )
    np.testing.assert_array_equal(fp8(values), to_fp8(values, Rounding(f)))


def fp8_outcomes(problem, exp) -> dict[str, tuple[np.ndarray, str, np.ndarray | None]]:
    """Outputs of FP8 kernels, right and wrong: (q, q's dtype, scale)."""
    fmt = exp.quant.fmt
    right = to_fp8(exp.y / exp.scale, Rounding(fmt))
    rows = exp.scale.size
    off = right.copy()
    off.flat[::7] = to_fp8(off.flat[::7] * 1.3, Rounding(fmt))  # some values a few steps off
    big = exp.scale * 448 / 240  # a scale from the wrong fp8 max
    return {
        "right": (right, fmt.dtype, exp.scale),
        "right as float32": (right, "float32", exp.scale.reshape(rows, 1)),
        "values off": (off, fmt.dtype, exp.scale),
        "not fp8 values": (right + 1e-3, "float32", exp.scale),
        "NaN": (np.where(np.arange(right.size).reshape(right.shape) == 3, np.nan, right), fmt.dtype, exp.scale),
        "another format": (right, "float8_e4m3fnuz", exp.scale),
        "scale off, values by it": (to_fp8(exp.y / big, Rounding(fmt)), fmt.dtype, big),
        "one scale for the tensor": (right, fmt.dtype, np.array(float(exp.scale.max()))),
        "no scale": (right, fmt.dtype, None),
    }


@pytest.mark.parametrize("quant", [Quantization("e4m3", ROW), Quantization("e5m2", STATIC)])
def test_the_scripts_fp8_verdict_and_error_are_verifys(quant, tmp_path, capsys):
    from normcheck.reference import reference
    from normcheck.repro.inputs import quantized_arrays
    from normcheck.verify.judge import Truth
    from normcheck.verify.quantized import expected_of, judge_quantized
    from normcheck.verify.tolerance import tolerance_for

    shape, params = (3, 4, 16), OpParams(normalized_ndim=1, quant=quant)
    problem, _ = problem_and_call(TORCH, TORCH.implementations("rms")[0], "rms", shape, params, "float32", "contiguous")
    truth = Truth.of(problem)
    exp = expected_of(problem, reference(problem)["forward"], tolerance_for("float32", truth.witness_errs["forward"]))
    arrays = {**case_arrays(problem), **quantized_arrays(problem)}
    case = Case("rms", "user", "f", shape, params, "float32", "normal")
    judged = 0
    for outcome, (q, dtype, scale) in fp8_outcomes(problem, exp).items():
        out = RunOutput()
        out.add(QUANTIZED_CHECK, q, dtype)
        outputs = {QUANTIZED_CHECK: np.asarray(q, dtype=np.float64), QUANTIZED_DTYPE: dtype}
        if scale is not None:
            out.add(SCALE_CHECK, scale, "float32")
            outputs[SCALE_CHECK] = np.asarray(scale, dtype=np.float64)
        for row in judge_quantized(case, problem, truth.expected, truth.witness_errs, out, None, diagnose=False):
            if row.status not in (PASS, FAIL):
                continue
            code = script_main(tmp_path, row, arrays, outputs)["main"]()
            printed = capsys.readouterr().out
            assert code == (row.status == FAIL), (outcome, row.check, row.message, printed)
            assert row.comparison is not None
            assert f"observed max abs error {row.comparison.max_abs_err:.3g}," in printed, (outcome, printed)
            judged += 1
    assert judged >= 12


# -- end to end: verify --repro on a buggy fixture, the script run without normcheck ----------


def index_errors(repro: Path) -> dict[str, str]:
    """script -> its row's "max abs error" as the index prints it (3 significant digits)."""
    found = {}
    for line in (repro / "README.md").read_text().splitlines():
        m = re.match(r"\| \[([^]]+\.py)\]\(.*", line)
        if m:
            found[m.group(1)] = line.split(" | ")[7].split(" / ")[0]
    return found


def reproduce(tmp_path: Path, op, impl, **options) -> tuple[Report, Path]:
    repro = tmp_path / "repro"
    report = normcheck.check(op, impl, framework="torch", jobs=1, repro=repro, **options)
    return report, repro


# kind -> (op, implementation, options, the script (a glob), the status of its row)
BUGGY = {
    "gemma": (
        "rms",
        f"{FIXTURES}/llm_norms.py:GemmaRMSNormNoOffset",
        {"variant": "gemma", "shapes": [(2, 5, 33)], "normalized_ndim": 1},
        "user_GemmaRMSNormNoOffset_rms_forward_*.py",
        FAIL,
    ),
    "fused add": (
        "add_rms",
        f"{FIXTURES}/llm_norms.py:fused_add_rms_norm_stale_residual",
        {"shapes": [(4, 16)], "normalized_ndim": 1},
        "user_fused_add_rms_norm_stale_residual_add_rms_residual_out_*.py",
        FAIL,
    ),
    "adaln": (
        "adaln",
        f"{FIXTURES}/adaln.py:adaln_no_offset",
        {"shapes": [(2, 5, 33)]},
        "user_adaln_no_offset_adaln_forward_*.py",
        FAIL,
    ),
    "axes": (
        "ln",
        f"{FIXTURES}/axis_norms.py:LastAxisLayerNorm2d",
        {"axes": [(1,)], "shapes": [(2, 6, 5, 7)]},
        "user_LastAxisLayerNorm2d_ln_forward_*.py",
        FAIL,
    ),
    "ws module": (
        "ws",
        f"{FIXTURES}/ws_layers.py:StdConv2dUnbiased",
        {"shapes": [(2, 5, 6, 6)]},
        "user_StdConv2dUnbiased_ws_forward_*.py",
        FAIL,
    ),
    "ws_gn function": (
        "ws_gn",
        f"{FIXTURES}/ws_layers.py:std_conv2d_whole_tensor",
        {"shapes": [(2, 6, 5, 5)], "groups": [3]},
        "user_std_conv2d_whole_tensor_ws_gn_forward_*.py",
        FAIL,
    ),
    "fp8 scale": (
        "rms",
        f"{FIXTURES}/fp8_norms.py:rms_norm_fp8_fnuz_max",
        {"quantize": "e4m3", "shapes": [(2, 5, 33)], "normalized_ndim": 1},
        "user_rms_norm_fp8_fnuz_max_rms_scale_*.py",
        FAIL,
    ),
    "fp8 values": (
        "rms",
        f"{FIXTURES}/fp8_norms.py:rms_norm_fp8_static_e5m2_no_clamp",
        {"quantize": "e5m2", "scale": "static", "shapes": [(2, 5, 33)], "normalized_ndim": 1},
        "user_rms_norm_fp8_static_e5m2_no_clamp_rms_quantized_*.py",
        FAIL,
    ),
    "ws half precision (PyTorch)": (
        "ws",
        None,
        {"shapes": [(2, 5, 6, 6)], "dtypes": "float16", "kinds": "large_mean"},
        "torch_StdConv2d_timm_F.batch_norm_F.conv2d_ws_*_known_defect_*.py",
        KNOWN,
    ),
}
# kind -> (op, the correct implementation, options): a run with nothing to reproduce
CORRECT = {
    "gemma": ("rms", f"{FIXTURES}/llm_norms.py:GemmaRMSNorm", BUGGY["gemma"][2]),
    "fused add": ("add_rms", f"{FIXTURES}/llm_norms.py:fused_add_rms_norm", BUGGY["fused add"][2]),
    "adaln": ("adaln", f"{FIXTURES}/adaln.py:adaln", BUGGY["adaln"][2]),
    "axes": ("ln", f"{FIXTURES}/axis_norms.py:ConvNeXtLayerNorm2d", BUGGY["axes"][2]),
    "ws module": ("ws", f"{FIXTURES}/ws_layers.py:StdConv2d", BUGGY["ws module"][2]),
    "ws_gn function": ("ws_gn", f"{FIXTURES}/ws_layers.py:std_conv2d", BUGGY["ws_gn function"][2]),
    "fp8 scale": ("rms", f"{FIXTURES}/fp8_norms.py:rms_norm_fp8", BUGGY["fp8 scale"][2]),
    "fp8 values": ("rms", f"{FIXTURES}/fp8_norms.py:rms_norm_fp8_static_e5m2", BUGGY["fp8 values"][2]),
    "ws (PyTorch, float32)": ("ws", None, {"shapes": [(2, 5, 6, 6)], "dtypes": "float32"}),
}
DEFAULTS = {"dtypes": "float32", "kinds": "normal"}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> dict[str, tuple[Report, Path, list[Path], list]]:
    """Each buggy run with --repro: (its report, the folder, the scripts of its glob, each
    script's run), the scripts all run in one fresh interpreter without normcheck."""
    runs = {}
    for kind, (op, impl, options, pattern, _) in BUGGY.items():
        report, repro = reproduce(tmp_path_factory.mktemp("repro"), op, impl, **{**DEFAULTS, **options})
        runs[kind] = (report, repro, sorted(repro.glob(pattern)))
    scripts = [script for _, _, found in runs.values() for script in found]
    done = iter(run_scripts(scripts, tmp_path_factory.mktemp("elsewhere")))
    return {kind: (report, repro, found, [next(done) for _ in found]) for kind, (report, repro, found) in runs.items()}


@pytest.mark.parametrize("kind", list(BUGGY))
def test_a_failure_of_each_kind_reproduces_without_normcheck(kind, reproduced):
    report, repro, scripts, ran = reproduced[kind]
    assert any(r.status == BUGGY[kind][4] for r in report.results), report.counts
    index = (repro / "README.md").read_text()
    assert "Failures without a reproducer" not in index, index
    assert scripts, (BUGGY[kind][3], sorted(p.name for p in repro.iterdir()))
    errors = index_errors(repro)
    for script, done in zip(scripts, ran, strict=True):
        assert_standalone(script)
        assert done.code == 1, done.stdout
        assert "reproduced:" in done.stdout, done.stdout
        # the error the script observes is the row's, as the index gives it
        observed = re.search(r"observed max abs error (\S+?),? ", done.stdout)
        assert observed is not None and observed.group(1) == errors[script.name], (done.stdout, errors[script.name])


@pytest.mark.parametrize("kind", list(CORRECT))
def test_a_correct_implementation_of_each_kind_gets_no_reproducer(kind, tmp_path):
    op, impl, options = CORRECT[kind]
    report, repro = reproduce(tmp_path, op, impl, **{**DEFAULTS, **options})
    assert report.ok and any(r.status == PASS for r in report.results), report.counts
    assert not list(repro.glob("*.py"))
    assert "The run had no failures to reproduce." in (repro / "README.md").read_text()


def test_a_fixed_fp8_kernel_passes_its_reproducer(reproduced, tmp_path):
    """The script of a wrong scale pointed at the correct kernel: exit 0, as verify passes it."""
    [script] = reproduced["fp8 scale"][2]
    text = script.read_text()
    fixed = script.with_name("fixed.py")
    fixed.write_text(text.replace("'rms_norm_fp8_fnuz_max')", "'rms_norm_fp8')"))
    fixed.with_suffix(".npz").write_bytes(script.with_suffix(".npz").read_bytes())
    done = run_script(fixed, tmp_path)
    assert done.code == 0, done.stdout
    assert "not reproduced: scale is within tolerance" in done.stdout


# -- other frameworks: refused, saying which framework and which variant ---------------------


def call_of(op: str, impl: str, params: OpParams, user: UserCode | None = None) -> ReproCall:
    return ReproCall(impl, op, (2, 5, 33), params, "float32", "contiguous", "cpu", 1e-5, 0.1, None, user)


@pytest.mark.parametrize(
    ("framework", "call", "words"),
    [
        (
            "tensorflow",
            call_of("bn", "keras.layers.BatchNormalization", OpParams(variant="cumulative")),
            "the cumulative variant of batch norm",
        ),
        (
            "jax",
            call_of("bn", "f", OpParams(variant="cumulative"), UserCode("jax_function", False)),
            "the cumulative variant of batch norm (momentum=None, the cumulative average)",
        ),
        ("onnxruntime", call_of("ln", "onnx.LayerNormalization", OpParams(axes=(1,))), "layer norm over axes 1"),
    ],
)
def test_another_frameworks_variant_row_is_refused_saying_which(framework, call, words):
    covers = getattr(registry.repro_module(framework), "COVERS", frozenset())
    uncovered = uncovered_extensions(call, covers)
    assert uncovered and any(words in u for u in uncovered), uncovered


def test_the_torch_reproducers_cover_every_extension():
    covers = registry.repro_module("torch").COVERS
    for op in ("rms", "ln", "bn", "add_rms", "adaln", "ws"):
        for name in (None, *OPS[op].variants()):
            call = call_of(op, "x", OpParams(normalized_ndim=1, variant=name))
            assert set(extensions(call)) <= covers
