"""normcheck model --input-shape on a torch.export program (.pt2) and on a TorchScript file (.pt):
every norm layer checked on its captured activation and on the hostile input kinds, forward and
backward, as the program's own aten norm call or the module's own scripted or traced layer. The
model files are written at test time (nothing binary is committed); the models run in this
process (NORMCHECK_INLINE=1) except where isolation is the point."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _models import inventory, normcheck_model
from _require import require

torch = require("torch")

import normcheck.cli as cli
from normcheck.model import export_checks
from normcheck.model.checks import captured_problem

# torch.jit.script/trace are deprecated, and the tracer warns about the models' Python branches
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
KINDS = {"captured", "large_mean", "tiny_scale", "constant", "half_range"}
BN_CHECKS = {"forward", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var"}


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["normcheck", "model", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def checked(monkeypatch, capsys, *args: str) -> tuple[int, dict, str]:
    code, out, err = run_main(monkeypatch, capsys, *args, "--format", "json")
    return code, json.loads(out) if out else {}, err


def not_passing(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if r["status"] != "pass"]


def by_impl(doc: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in doc["results"]:
        out.setdefault(r["impl"], []).append(r)
    return out


def exported(tmp_path, model, *example, decompose: bool = False, name: str = "model.pt2", **kw) -> str:
    program = torch.export.export(model, example, **kw)
    if decompose:
        program = program.run_decompositions()
    path = str(tmp_path / name)
    torch.export.save(program, path)
    return path


def scripted(tmp_path, model, example=None, name: str = "model.pt") -> str:
    module = torch.jit.script(model) if example is None else torch.jit.trace(model, example)
    path = str(tmp_path / name)
    torch.jit.save(module, path)
    return path


# ---- torch.export ------------------------------------------------------------------------------


def test_the_exported_cnn_passes_every_check_of_every_layer(monkeypatch, capsys, tmp_path):
    from fixtures.models.torch_cnn import build

    path = exported(tmp_path, build(), torch.randn(1, 3, 32, 32))
    code, doc, err = checked(monkeypatch, capsys, path, "--input-shape", "1,3,32,32")
    assert code == 0, not_passing(doc)
    assert not not_passing(doc)
    rows = by_impl(doc)
    assert set(rows) == {"bn1 (torch.nn.BatchNorm2d)", "gn2 (torch.nn.GroupNorm)"}
    assert {r["check"] for r in rows["bn1 (torch.nn.BatchNorm2d)"]} == BN_CHECKS
    assert {r["input"] for r in doc["results"]} == KINDS
    captured = [r for r in rows["gn2 (torch.nn.GroupNorm)"] if r["input"] == "captured"]
    assert captured[0]["shape"] == "1x16x32x32" and captured[0]["params"] == "G=4"
    assert [layer["path"] for layer in doc["model"]["layers"]] == ["bn1", "gn2"]  # the inventory's paths
    assert "0 failed" in err


@pytest.mark.parametrize("training, decompose", [(True, False), (False, True), (True, True)])
def test_training_and_decomposed_programs_pass_and_keep_their_state(monkeypatch, capsys, tmp_path, training, decompose):
    """aten.batch_norm (training IR), _native_batch_norm_legit_no_training (eval, decomposed) and
    _native_batch_norm_legit_functional (training, decomposed: running statistics as outputs)."""
    from fixtures.models.torch_cnn import build

    path = exported(tmp_path, build().train(training), torch.randn(2, 3, 8, 8), decompose=decompose)
    before = {k: v.clone() for k, v in torch.export.load(path).state_dict.items()}
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,3,8,8")
    assert code == 0, not_passing(doc)
    bn = [r for r in doc["results"] if r["impl"].startswith("bn1")]
    assert {r["check"] for r in bn} == BN_CHECKS
    assert {r["params"] for r in bn if r["input"] == "captured"} == {"train" if training else "eval"}
    assert all(torch.equal(before[k], v) for k, v in torch.export.load(path).state_dict.items())


def test_every_torch_norm_layer_and_functional_call_of_a_program_passes(monkeypatch, capsys, tmp_path):
    from fixtures.models.torch_norms import build

    path = exported(tmp_path, build(), torch.randn(2, 4, 6, 6))
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,4,6,6")
    assert code == 0, not_passing(doc)
    paths = [r["impl"].split(" ")[0] for r in doc["results"]]
    assert set(paths) == {
        "bn",
        "bn_batch",
        "inst",
        "inst_running",
        "gn",
        "ln",
        "rms",
        "rms_eps",
        "(model)/layer_norm",
        "(model)/group_norm",
    }
    rms = [r for r in doc["results"] if r["impl"].startswith("rms ")]
    assert {r["check"] for r in rms} == {"forward", "grad_input", "grad_weight"}


@pytest.mark.slow
def test_a_decomposed_program_with_a_dynamic_batch(monkeypatch, capsys, tmp_path):
    """Instance norm decomposed into a batch norm over (1, N·C, H, W), its weight repeated for each
    sample of the dynamic batch: the weight is the one the capture pass saw the call take."""
    from fixtures.models.torch_norms import build

    batch = torch.export.Dim("batch", min=2, max=64)
    path = exported(tmp_path, build(), torch.randn(2, 4, 6, 6), decompose=True, dynamic_shapes={"x": {0: batch}})
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "3,4,6,6")
    assert code == 0, not_passing(doc)
    inst = [r for r in doc["results"] if r["impl"].startswith("inst/_native_batch_norm_legit ")]
    assert {r["shape"] for r in inst if r["input"] == "captured"} == {"1x12x6x6"}


def test_a_user_norm_in_a_program_is_a_skip_row_never_a_verdict(monkeypatch, capsys, tmp_path):
    """torch.export decomposes MyGroupNorm (eps outside the root) into elementary ops: no norm call
    to run, so it is listed as a candidate and skipped; the batch norm before it is checked."""
    from fixtures.models.buggy_torch import eps_outside_group_norm

    path = exported(tmp_path, eps_outside_group_norm(), torch.randn(2, 3, 8, 8))
    inv = inventory(path)
    assert [(layer.path, layer.confirmed, layer.op) for layer in inv.layers] == [
        ("bn", True, "bn"),
        ("norm", False, "gn"),
    ]
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,3,8,8")
    assert code == 0
    (row,) = not_passing(doc)
    assert row["status"] == "skip" and row["impl"] == "norm (fixtures.models.buggy_torch.MyGroupNorm)"
    assert "decomposed into the graph's elementary ops" in row["message"]
    assert {r["status"] for r in doc["results"] if r["impl"].startswith("bn ")} == {"pass"}


def test_a_float16_program_reports_pytorchs_documented_defect_as_known(monkeypatch, capsys, tmp_path):
    from fixtures.models.torch_cnn import build

    model = build().to(torch.float16)
    path = exported(tmp_path, model, torch.randn(2, 3, 16, 16, dtype=torch.float16))
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,3,16,16", "--kinds", "large_mean")
    assert code == 0 and not [r for r in doc["results"] if r["status"] in ("fail", "error")]
    known = [r for r in doc["results"] if r["status"] == "known"]
    assert known and {r["diagnosis"]["hypothesis"] for r in known} == {"saved_stats_in_input_dtype"}
    assert {r["dtype"] for r in doc["results"]} == {"float16"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input-shape", "2,3,8,8"], "exported for input x of shape 1x3x32x32 (? is dynamic), not 2x3x8x8"),
        (["--input-shape", "1,3,32,32", "--input-shape", "1,3,32,32"], "the program takes 1 input (x); 2 given"),
        (["--input-shape", "1,3,32,32", "--dtype", "float64"], "a torch.export program runs in the dtypes"),
    ],
)
def test_what_a_program_cannot_take_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args, message):
    from fixtures.models.torch_cnn import build

    path = exported(tmp_path, build(), torch.randn(1, 3, 32, 32))
    code, out, err = run_main(monkeypatch, capsys, path, *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert message in err


def test_a_program_that_raises_on_the_input_is_one_line_naming_where(monkeypatch, capsys, tmp_path):
    from fixtures.models.torch_cnn import build

    path = exported(tmp_path, build(), torch.randn(1, 3, 8, 8))
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 3, 8, 8)))  # float64 for a float32 program
    code, out, err = run_main(monkeypatch, capsys, path, "--input", str(tmp_path / "x.npz"))
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "the model raised RuntimeError" in err and "before reaching any norm layer, on input 1x3x8x8 float64" in err


def test_runner_for_runs_the_programs_own_call_on_an_activation(tmp_path):
    """The interface normcheck port builds on: the layer located by its path, run on a Problem."""
    from fixtures.models.torch_cnn import build

    model = build()
    program = torch.export.load(exported(tmp_path, model, torch.randn(1, 3, 8, 8)))
    layers = {layer.path: layer for layer in inventory(str(tmp_path / "model.pt2")).layers}
    x = torch.randn(1, 16, 8, 8)
    runner = export_checks.runner_for(program, layers["gn2"], x.double().numpy(), "float32")
    assert not isinstance(runner, str) and runner.setup.eps == 1e-6 and runner.setup.params.groups == 4
    out = runner.run(captured_problem(runner.setup, x.double().numpy(), 0, "gn2"))
    with torch.no_grad():
        np.testing.assert_array_equal(out.values["forward"], model.gn2(x).double().numpy())
    assert {"forward", "grad_input", "grad_weight", "grad_bias"} <= set(out.values)


# ---- TorchScript -------------------------------------------------------------------------------


@pytest.mark.parametrize("trace", [False, True], ids=["scripted", "traced"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_torchscript_cnn_passes_and_keeps_its_running_statistics(monkeypatch, capsys, tmp_path, trace, training):
    from fixtures.models.torch_cnn import build

    example = torch.randn(2, 3, 8, 8) if trace else None
    path = scripted(tmp_path, build().train(training), example)
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,3,8,8")
    assert code == 0, not_passing(doc)
    suffix = "; traced)" if trace else ")"
    assert set(by_impl(doc)) == {f"bn1 (torch.nn.BatchNorm2d{suffix}", f"gn2 (torch.nn.GroupNorm{suffix}"}
    assert {r["check"] for r in doc["results"] if r["impl"].startswith("bn1")} == BN_CHECKS
    assert {r["params"] for r in doc["results"] if r["impl"].startswith("bn1")} == {"train" if training else "eval"}


def test_the_capture_pass_leaves_a_torchscript_model_as_it_was(tmp_path):
    from fixtures.models.torch_cnn import build

    model = torch.jit.script(build().train())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = export_checks.capture_script(model, ["bn1", "gn2"], [torch.randn(2, 3, 8, 8)], str(tmp_path))
    assert {p: np.load(c.file).shape for p, c in found.items()} == {"bn1": (2, 8, 8, 8), "gn2": (2, 16, 8, 8)}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "normcheck_capture" not in str(model.graph)  # the model's own graph is untouched


def test_every_torch_norm_layer_of_a_scripted_model_passes(monkeypatch, capsys, tmp_path):
    from fixtures.models.torch_norms import build

    path = scripted(tmp_path, build())
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,4,6,6")
    assert code == 0, not_passing(doc)
    assert {r["impl"].split(" ")[0] for r in doc["results"]} == {
        "bn",
        "bn_batch",
        "inst",
        "inst_running",
        "gn",
        "ln",
        "rms",
        "rms_eps",
    }


def test_a_scripted_group_norm_with_eps_outside_the_root_fails_there_with_that_cause(monkeypatch, capsys, tmp_path):
    from fixtures.models.buggy_torch import eps_outside_group_norm

    path = scripted(tmp_path, eps_outside_group_norm())
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,3,8,8")
    assert code == 1
    bad = not_passing(doc)
    assert bad and {r["impl"].split(" ")[0] for r in bad} == {"norm"}  # the batch norm before it passes
    assert all(r["status"] == "fail" for r in bad)
    tiny = [r for r in bad if r["input"] == "tiny_scale"]
    assert tiny and all(r["diagnosis"]["hypothesis"] == "eps_outside_sqrt" for r in tiny)
    assert "probed: gn, eps 1e-05" in bad[0]["impl"]


def test_scripted_llama_and_gemma_norms_are_probed_and_pass(monkeypatch, capsys, tmp_path):
    from fixtures.models.torch_transformer import build

    path = scripted(tmp_path, build())
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,8,32")
    assert code == 0, not_passing(doc)
    impls = set(by_impl(doc))
    assert "input_layernorm (fixtures.models.torch_transformer.LlamaRMSNorm; probed: rms, eps 1e-06)" in impls
    assert any(i.startswith("post_attention_layernorm") and "1 + w" in i for i in impls)


def test_a_scripted_layer_norm_2d_over_the_wrong_axis_stays_unconfirmed(monkeypatch, capsys, tmp_path):
    from fixtures.models.buggy_torch import wrong_axis_layer_norm

    path = scripted(tmp_path, wrong_axis_layer_norm())
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,3,8,8")
    assert code == 0  # never a failing verdict on a guess
    (row,) = not_passing(doc)
    assert row["status"] == "skip" and row["message"].startswith("unconfirmed: behaves like no normalization")


class _Shared(torch.nn.Module):
    """One LayerNorm called in a loop over a ModuleList's blocks and in both branches of an if."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))])
        self.norm = torch.nn.LayerNorm(8, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = self.norm(x) if bool(x.sum() > 0) else self.norm(x) * 2.0  # a prim::If with a call in each branch
        return self.norm(x)


def test_layers_in_loops_and_branches_of_a_scripted_graph_are_captured_and_counted(tmp_path):
    model = torch.jit.script(_Shared().eval())
    found = export_checks.capture_script(model, ["blocks.0.1", "norm"], [torch.randn(3, 8)], str(tmp_path))
    assert {p: (np.load(c.file).shape, c.calls) for p, c in found.items()} == {
        "blocks.0.1": ((3, 8), 1),
        "norm": ((3, 8), 2),
    }


def test_a_scripted_model_that_raises_names_the_last_norm_layer_it_reached(monkeypatch, capsys, tmp_path):
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Conv2d(5, 4, 1)).eval()
    path = scripted(tmp_path, model)
    code, out, err = run_main(monkeypatch, capsys, path, "--input-shape", "2,3,4,4")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "the model raised" in err and "after its norm layer 0, on input 2x3x4x4 float32" in err


@pytest.mark.slow
def test_a_torchscript_file_in_a_real_worker(real_workers, tmp_path):
    from fixtures.models.torch_cnn import build

    path = scripted(tmp_path, build())
    proc = normcheck_model(path, "--input-shape", "2,3,8,8", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in json.loads(proc.stdout)["results"]} == {"pass"}


@pytest.mark.parametrize("how", ["export", "script", "trace"])
def test_capture_layers_gives_what_runner_for_takes(tmp_path, how):
    """normcheck port's path: capture once, then run any layer by its record path."""
    from fixtures.models.torch_cnn import build

    example = torch.randn(2, 3, 8, 8)
    if how == "export":
        path = exported(tmp_path, build(), example)
        model = torch.export.load(path)
    else:
        path = scripted(tmp_path, build(), example if how == "trace" else None)
        model = torch.jit.load(path)
    inv = inventory(path)
    found = export_checks.capture_layers(model, inv, ((2, 3, 8, 8),), None, 0, str(tmp_path))
    assert set(found) == {"bn1", "gn2"}
    for layer in inv.layers:
        x = np.load(found[layer.path].file).astype(np.float64)
        runner = export_checks.runner_for(model, layer, x, found[layer.path].dtype)
        assert not isinstance(runner, str)
        rows = runner.rows(x, ("captured",), 0, layer.path)
        assert rows and {r.status for r in rows} == {"pass"}
