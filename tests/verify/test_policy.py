"""--policy end to end and row by row: the fixtures of fixtures/policy_norms.py (transformers'
Llama, Gemma and T5 RMS norms, and kernels that cast in another place) pass their own policy and
fail another naming the one they match; parity rows built from hand-made outputs; usage errors,
the config key, the default dtypes and the float32 weight of the PyTorch forms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _require import require

import normcheck
from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.ops import OpParams
from normcheck.policies import POLICIES, emulate
from normcheck.verify.config import load_config
from normcheck.verify.inputs import make_problem
from normcheck.verify.policy import policy_rows
from normcheck.verify.records import FAIL, PASS, SKIP, Case
from normcheck.verify.request import Request, options, validate

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "policy_norms.py"
SMALL = {"shapes": [[4, 64], [2, 3, 40]], "kinds": "normal,large_mean", "jobs": 1}


def _parity(name: str, policy: str, variant: str | None = None, dtypes: str = "float16,bfloat16", **options):
    report = normcheck.check(
        "rms",
        f"{FIXTURES}:{name}",
        framework="torch",
        policy=policy,
        variant=variant,
        dtypes=dtypes,
        **{**SMALL, **options},
    )
    rows = [r for r in report.results if r.against == f"policy:{policy}"]
    assert rows
    return report, rows


# (fixture, its own policy, its variant, another policy it fails, what the failure names)
CORRECT = [
    ("LlamaRMSNorm", "llama", None, "native", "matches llama"),
    ("llama_rms_norm", "llama", None, "native", "matches llama"),
    ("GemmaRMSNorm", "gemma", "gemma", "native", "matches gemma"),
    ("T5LayerNorm", "t5", None, "fp32-weight", "matches t5"),
]


@pytest.mark.parametrize(("name", "own", "variant", "other", "named"), CORRECT, ids=[c[0] for c in CORRECT])
def test_correct_fixtures_pass_their_policy_and_are_named_under_another(name, own, variant, other, named):
    require("torch")
    report, rows = _parity(name, own, variant, dtypes="float32,float16,bfloat16")
    assert report.ok, [r.message for r in report.failing()][:3]
    assert all(r.status == PASS for r in rows)
    _, rows = _parity(name, other, variant)
    failing = [r for r in rows if r.status == FAIL]
    assert failing
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.cause.startswith(named), r.diagnosis
        assert named in r.message and not r.diagnosis.ambiguous


@pytest.mark.parametrize(("name", "own", "variant"), [c[:3] for c in CORRECT if c[0][0].isupper()])
def test_correct_fixtures_pass_on_the_whole_default_grid(name, own, variant):
    """Every default shape and input kind (constant rows, tiny spreads near sqrt(eps), +-6e4 values)
    in float32, float16 and bfloat16: a correct kernel is never outside its policy's band."""
    require("torch")
    report = normcheck.check(
        "rms", f"{FIXTURES}:{name}", framework="torch", policy=own, variant=variant, dtypes="float32,float16,bfloat16"
    )
    rows = [r for r in report.results if r.against == f"policy:{own}"]
    assert len(rows) > 100 and all(r.status == PASS for r in rows), [r.message for r in rows if r.status != PASS][:3]
    assert report.ok, [r.message for r in report.failing()][:3]


def test_native_arithmetic_is_held_to_its_own_rounding_in_every_dtype():
    """Plain torch ops on half tensors fail the float64 reference (that is what computing in
    bfloat16 costs) but match the native policy exactly, PyTorch's CPU rsqrt of a half tensor (the
    root rounded to the half dtype, then its reciprocal) included; an fp32-weight kernel is named
    as such under native."""
    require("torch")
    report = normcheck.check(
        "rms", f"{FIXTURES}:NativeRMSNorm", framework="torch", policy="native", kinds="normal,tiny_scale,half_range"
    )
    rows = [r for r in report.results if r.against == "policy:native"]
    assert {r.case.dtype for r in rows} == {"float64", "float32", "float16", "bfloat16"}
    assert all(r.status == PASS for r in rows), [r.message for r in rows if r.status != PASS][:3]
    _, rows = _parity("LlamaRMSNormCastAfterWeight", "native")
    failing = [r for r in rows if r.status == FAIL]
    assert failing
    for r in failing:  # without a weight, casting before or after it is the same: llama computes it too
        assert r.diagnosis.cause.startswith("matches fp32-weight" if r.case.params.affine else "matches llama")
        assert "fp32-weight" in r.diagnosis.cause


# (fixture, the policy it claims, its variant, what it matches instead)
BUGGY = [
    ("LlamaRMSNormCastAfterWeight", "llama", None, "matches fp32-weight"),
    ("GemmaRMSNormOffsetInDtype", "gemma", "gemma", "matches gemma with the offset 1 + w added in the input dtype"),
    (
        "GemmaRMSNormCastBeforeWeight",
        "gemma",
        "gemma",
        "matches gemma with the cast to the input dtype before the weight multiply",
    ),
]


@pytest.mark.parametrize(("name", "claimed", "variant", "named"), BUGGY, ids=[b[0] for b in BUGGY])
def test_buggy_fixtures_fail_their_policy_naming_what_they_match(name, claimed, variant, named):
    """Each passes the float64 reference (its error is within the output's own rounding) and
    only the policy catches it."""
    require("torch")
    report, rows = _parity(name, claimed, variant)
    assert not [r for r in report.failing() if r.against is None]
    failing = [r for r in rows if r.status == FAIL]
    assert failing
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.cause.startswith(named), r.diagnosis
        assert r.diagnosis.hypothesis is not None and not r.diagnosis.ambiguous
        assert "outside policy" in r.message and "ulp of" in r.message


def test_torch_rms_norm_casts_after_the_weight():
    """torch.nn.functional.rms_norm upcasts half input, multiplies the weight in float32 and
    rounds once: it is not Llama's order, and the parity row says whose it is."""
    require("torch")
    report = normcheck.check(
        "rms", framework="torch", policy="llama", dtypes="bfloat16", shapes=[[4, 64]], kinds="normal", jobs=1
    )
    rows = [r for r in report.results if r.against == "policy:llama"]
    assert {r.case.impl for r in rows} == {"F.rms_norm", "nn.RMSNorm"}
    for r in rows:
        assert r.status == FAIL and r.diagnosis is not None
        assert r.diagnosis.cause.startswith("matches fp32-weight")
    assert normcheck.check(
        "rms", framework="torch", policy="fp32-weight", dtypes="bfloat16", shapes=[[4, 64]], kinds="normal", jobs=1
    ).ok


# -- rows from hand-made outputs ---------------------------------------------------------------


def _problem(dtype: str = "bfloat16", variant: str | None = None):
    return make_problem("rms", (3, 32), OpParams(normalized_ndim=1, variant=variant), dtype, "normal", eps=1e-6)


def _rows(problem, policy: str, values: np.ndarray | None, dtype: str = "bfloat16"):
    out = RunOutput()
    if values is not None:
        out.add("forward", values, dtype)
    case = Case("rms", "user", "mine", problem.shape, problem.params, problem.dtype, problem.kind)
    return policy_rows(case, problem, out, policy)


def _center(policy: str, problem) -> np.ndarray:
    p = problem.params
    return emulate(
        POLICIES[policy], problem.x, problem.weight, problem.eps, 1, problem.dtype, p.variant == "gemma"
    ).center


def test_the_policys_own_output_passes_and_anothers_is_named():
    problem = _problem()
    (row,) = _rows(problem, "llama", _center("llama", problem))
    assert row.status == PASS and row.against == "policy:llama" and row.check == "forward"
    assert row.comparison is not None and row.comparison.mismatched == 0
    (row,) = _rows(problem, "llama", _center("fp32-weight", problem))
    assert row.status == FAIL and row.diagnosis is not None
    assert row.diagnosis.hypothesis == "policy:fp32-weight"
    assert row.diagnosis.family == "policy" and row.diagnosis.fix.startswith("compute as policy llama states")


def test_an_output_no_policy_computes_is_unknown():
    problem = _problem()
    wrong = _center("llama", problem) * 1.5
    (row,) = _rows(problem, "llama", wrong)
    assert row.status == FAIL and row.diagnosis is not None and row.diagnosis.hypothesis is None
    assert "matches no policy" in row.message
    (row,) = _rows(problem, "llama", np.full(problem.shape, np.nan))
    assert row.status == FAIL and "matches no policy" in row.message


def test_the_output_dtype_is_part_of_the_policy():
    problem = _problem()
    (row,) = _rows(problem, "llama", _center("llama", problem), dtype="float32")
    assert row.status == FAIL and "returned float32; policy llama outputs bfloat16" in row.message


def test_no_forward_is_a_skip():
    problem = _problem()
    (row,) = _rows(problem, "llama", None)
    assert row.status == SKIP


def test_outputs_several_policies_give_apart_are_ambiguous():
    """In float64 the float32 policies' bands are wide (float32 ulps) and overlap: an output
    inside two different ones is named as neither."""
    problem = _problem("float64")
    (row,) = _rows(problem, "native", _center("llama", problem), dtype="float64")
    assert row.status == FAIL and row.diagnosis is not None
    assert row.diagnosis.ambiguous and row.diagnosis.cause.startswith("ambiguous: matches")


# -- requests ------------------------------------------------------------------------------------

REFUSED = [
    ({"ops": "rms", "policy": "bf16"}, "unknown policy 'bf16'; choose from llama, gemma, t5, native, fp32-weight"),
    ({"ops": "ln", "policy": "llama"}, "policy llama covers --op rms, not --op ln"),
    ({"ops": "rms", "policy": "gemma"}, "policy gemma covers --op rms --variant gemma, not --op rms"),
    ({"ops": "rms", "variant": "gemma", "policy": "t5"}, "policy t5 covers --op rms, not --op rms --variant gemma"),
    ({"policy": "llama"}, "--policy llama needs --op"),
    (
        {"ops": "rms", "policy": "llama", "quantize": "e4m3", "impl": "x.py:LlamaRMSNorm"},
        "--policy holds the output in its own dtype; it cannot be combined with --quantize",
    ),
    (
        {"ops": "rms", "policy": "llama", "profile": "quick"},
        "profile quick covers the plain checks; check a policy with the default profile",
    ),
]


@pytest.mark.parametrize(("fields", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_usage_errors(fields, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace("+", r"\+")):
        validate(Request(frameworks="torch", **fields))


def test_usage_errors_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from normcheck.cli import app

    result = CliRunner().invoke(app, ["verify", "--op", "ln", "--policy", "llama"])
    assert result.exit_code == 2
    assert "policy llama covers --op rms, not --op ln" in result.output


def test_config_key(tmp_path):
    path = tmp_path / "normcheck.toml"
    path.write_text('[[check]]\nop = "rms"\nimpl = "x.py:LlamaRMSNorm"\npolicy = "llama"\n')
    (request,) = load_config(path)
    assert request.policy == "llama"


def test_a_float32_policy_leaves_float64_out_unless_asked():
    assert options(Request(ops="rms", policy="llama"), ("rms",)).dtypes == ("float32", "float16", "bfloat16")
    assert "float64" in options(Request(ops="rms", policy="native"), ("rms",)).dtypes
    assert options(Request(ops="rms", policy="llama", dtypes="float64"), ("rms",)).dtypes == ("float64",)


def test_the_torch_forms_store_a_float32_weight():
    require("torch")
    from normcheck.frameworks.torch.adapter import TorchFramework

    params = OpParams(normalized_ndim=1, weight_dtype="float32")
    problem = make_problem("rms", (3, 32), params, "bfloat16", "normal", eps=1e-6)
    for impl in TorchFramework().implementations("rms"):
        out = impl.run(problem, "contiguous", "cpu")
        assert out.dtypes["grad_weight"] == "float32" and out.dtypes["forward"] == "bfloat16", impl.name
    assert "float32 weight" in params.label()


def test_an_implementations_documented_defect_makes_its_parity_rows_known():
    """Keras's LayerNormalization(rms_scaling=True) is not RMS norm (keras#21234): its forward
    rows are known defects, and so are its parity rows, in half precision too, where the forward
    row is within the reference's tolerance but the policy's ulp band is not."""
    require("tensorflow")
    report = normcheck.check(
        "rms",
        framework="tensorflow",
        policy="fp32-weight",
        dtypes="float32,bfloat16",
        shapes=[[4, 64]],
        kinds="normal,half_range",
        jobs=1,
    )
    rows = [r for r in report.results if r.against == "policy:fp32-weight" and "rms_scaling" in r.case.impl]
    assert rows and all(r.status == "known" for r in rows if r.case.dtype == "float32")
    assert not [r for r in report.results if r.status == FAIL], [r.message for r in report.failing()][:3]
    assert report.ok
