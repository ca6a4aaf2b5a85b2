"""The inventory of torch.nn.Module trees: eager (factory, class), TorchScript (scripted, traced)."""

from __future__ import annotations

import pytest
from _require import require

torch = require("torch")

from _models import MODELS, by_path, inventory

from normcheck.model.records import BUILT_IN, CANDIDATE, CUMULATIVE, EVAL, MACHINE_EPS, NEW, TRAIN

CNN = f"{MODELS}/torch_cnn.py"
BLOCK = f"{MODELS}/torch_transformer.py"


def test_the_cnn_factory_lists_its_batch_norm_and_group_norm_with_their_own_settings():
    inv = inventory(f"{CNN}:build")
    assert (inv.framework, inv.loader, inv.model) == ("torch", "torch.nn.Module", "SmallCNN")
    assert [layer.path for layer in inv.layers] == ["bn1", "gn2"]
    bn, gn = inv.layers
    assert (bn.op, bn.kind, bn.basis, bn.confirmed) == ("bn", "torch.nn.BatchNorm2d", BUILT_IN, True)
    assert (bn.eps, bn.momentum, bn.momentum_weights, bn.new_batch_weight) == (
        1e-4,
        pytest.approx(0.2),
        NEW,
        pytest.approx(0.2),
    )
    assert (bn.running_stats, bn.mode, bn.channel_axis, bn.axes, bn.feature_shape) == (True, EVAL, 1, (0, 2, 3), (8,))
    assert (bn.weight, bn.bias, bn.dtype) == (True, True, "float32")
    assert [p.role for p in bn.params] == ["weight", "bias", "running_mean", "running_var"]
    assert (gn.op, gn.kind, gn.eps, gn.groups, gn.channel_axis, gn.feature_shape) == (
        "gn",
        "torch.nn.GroupNorm",
        1e-6,
        4,
        1,
        (16,),
    )
    assert gn.momentum is None and gn.running_stats is None and gn.mode is None


def test_parameter_summaries_are_the_tensors_own():
    from fixtures.models.torch_cnn import build

    model = build()
    bn = inventory(f"{CNN}:build").layers[0]
    for role, tensor in (("weight", model.bn1.weight), ("running_var", model.bn1.running_var)):
        p = bn.param(role)
        assert p is not None
        assert p.name == f"bn1.{role}" and p.shape == (8,) and p.dtype == "float32"
        assert p.min == pytest.approx(float(tensor.min())) and p.max == pytest.approx(float(tensor.max()))
        assert p.mean == pytest.approx(float(tensor.mean()), rel=1e-6)


def test_a_model_class_is_built_with_no_arguments_and_its_mode_is_read():
    assert inventory(f"{CNN}:SmallCNN").layers[0].mode == TRAIN  # a new module is in training mode
    inv = inventory(f"{CNN}:build_training")
    assert inv.layers[0].mode == TRAIN
    assert any("training mode" in note for note in inv.notes)


def test_user_norm_layers_are_unconfirmed_candidates_with_their_eps_and_weight():
    inv = inventory(f"{BLOCK}:build")
    layers = by_path(inv)
    assert list(layers) == ["input_layernorm", "post_attention_layernorm", "final_norm", "head_norm"]
    llama, gemma = layers["input_layernorm"], layers["post_attention_layernorm"]
    for layer, cls in ((llama, "LlamaRMSNorm"), (gemma, "GemmaRMSNorm")):
        assert layer.kind.endswith(f".{cls}") and layer.basis == CANDIDATE and not layer.confirmed
        assert layer.op == "rms"  # guessed from the name, to be confirmed by probing
        assert layer.eps == 1e-6  # variance_epsilon for Llama, eps for Gemma
        assert (layer.weight, layer.bias) == (True, False)
    assert gemma.param("weight").max == 0.0  # Gemma's (1 + w) weight starts at zero
    assert (layers["final_norm"].op, layers["final_norm"].axes, layers["final_norm"].eps) == ("ln", (-1,), 1e-5)
    rms = layers["head_norm"]
    assert (rms.op, rms.eps, rms.axes, rms.feature_shape, rms.bias) == ("rms", MACHINE_EPS, (-1,), (32,), False)
    assert [len(inv.confirmed), len(inv.candidates)] == [2, 2]


def _inventory_of(tmp_path, source: str, name: str = "build"):
    path = tmp_path / "net.py"
    path.write_text("import torch\nfrom torch import nn\n" + source)
    return inventory(f"{path}:{name}")


def test_every_builtin_norm_class_is_recognized(tmp_path):
    inv = _inventory_of(
        tmp_path,
        """
def build():
    return nn.ModuleDict({
        "bn1d": nn.BatchNorm1d(4), "bn3d": nn.BatchNorm3d(4, momentum=None), "sync": nn.SyncBatchNorm(4),
        "in1d": nn.InstanceNorm1d(4), "in2d": nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        "in3d": nn.InstanceNorm3d(4), "ln": nn.LayerNorm((4, 5), bias=False), "gn": nn.GroupNorm(2, 4, affine=False),
        "rms": nn.RMSNorm([5], eps=1e-6), "lazy_bn": nn.LazyBatchNorm2d(), "lazy_in": nn.LazyInstanceNorm2d(),
        "lrn": nn.LocalResponseNorm(2), "no_stats": nn.BatchNorm2d(4, track_running_stats=False),
    }).eval()
""",
    )
    layers = by_path(inv)
    assert "lrn" not in layers  # LocalResponseNorm is not a normalization layer of ours
    kinds = {path: (layer.op, layer.kind) for path, layer in layers.items()}
    assert kinds["sync"] == ("bn", "torch.nn.SyncBatchNorm")
    assert kinds["lazy_bn"] == ("bn", "torch.nn.LazyBatchNorm2d")
    assert kinds["lazy_in"] == ("in", "torch.nn.LazyInstanceNorm2d")
    assert layers["bn1d"].axes is None  # (N, C) or (N, C, L)
    assert (layers["bn3d"].momentum, layers["bn3d"].momentum_weights, layers["bn3d"].axes) == (
        None,
        CUMULATIVE,
        (0, 2, 3, 4),
    )
    assert (layers["in1d"].axes, layers["in1d"].weight, layers["in1d"].running_stats, layers["in1d"].mode) == (
        (-1,),
        False,
        False,
        None,
    )
    assert (layers["in2d"].axes, layers["in2d"].weight, layers["in2d"].running_stats, layers["in2d"].mode) == (
        (-2, -1),
        True,
        True,
        EVAL,
    )
    assert (layers["ln"].axes, layers["ln"].feature_shape, layers["ln"].weight, layers["ln"].bias) == (
        (-2, -1),
        (4, 5),
        True,
        False,
    )
    assert (layers["gn"].weight, layers["gn"].bias, layers["gn"].groups) == (False, False, 2)
    assert layers["rms"].eps == 1e-6
    lazy = layers["lazy_bn"]
    assert lazy.feature_shape is None and lazy.param("weight").shape is None
    assert "uninitialized" in lazy.param("weight").note
    assert any("lazy" in note for note in lazy.notes)
    no_stats = layers["no_stats"]
    assert no_stats.running_stats is False and no_stats.momentum_weights is None
    assert any("batch's statistics in eval mode" in note for note in no_stats.notes)


def test_a_shared_module_is_listed_once_and_a_subclass_of_a_builtin_is_a_candidate(tmp_path):
    inv = _inventory_of(
        tmp_path,
        """
class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.again = self.norm
        self.ln2d = LayerNorm2d(8, eps=1e-6)
        self.plain = nn.Linear(8, 8)

def build():
    return Net()
""",
    )
    assert [layer.path for layer in inv.layers] == ["norm", "ln2d"]
    ln2d = inv.layers[1]
    assert (ln2d.confirmed, ln2d.basis, ln2d.op, ln2d.eps, ln2d.axes) == (False, CANDIDATE, "ln", 1e-6, (-1,))
    assert any("subclass of torch.nn.LayerNorm" in note for note in ln2d.notes)


def test_a_norm_layer_given_alone_is_the_model_itself(tmp_path):
    inv = _inventory_of(tmp_path, "def build():\n    return nn.GroupNorm(2, 4)\n")
    assert [(layer.path, layer.op) for layer in inv.layers] == [("(model)", "gn")]


def test_a_half_precision_model_reports_its_dtype(tmp_path):
    inv = _inventory_of(tmp_path, "def build():\n    return nn.Sequential(nn.LayerNorm(4)).to(torch.bfloat16)\n")
    layer = inv.layers[0]
    assert layer.path == "0" and layer.dtype == "bfloat16" and layer.param("weight").dtype == "bfloat16"


@pytest.mark.filterwarnings("ignore")  # torch.jit.trace is deprecated, and warns about the model
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_files_keep_paths_and_settings(tmp_path, how):
    from fixtures.models.torch_cnn import build

    model = build()
    saved = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.randn(2, 3, 16, 16))
    path = str(tmp_path / "cnn.pt")
    saved.save(path)
    inv = inventory(path)
    assert (inv.loader, inv.model) == ("TorchScript", "SmallCNN")
    bn, gn = inv.layers
    assert (bn.path, bn.kind, bn.eps, bn.momentum, bn.mode, bn.feature_shape) == (
        "bn1",
        "torch.nn.BatchNorm2d",
        1e-4,
        pytest.approx(0.2),
        EVAL,
        (8,),
    )
    assert (gn.path, gn.kind, gn.eps, gn.groups) == ("gn2", "torch.nn.GroupNorm", 1e-6, 4)
    assert bn.param("running_mean").mean == pytest.approx(float(model.bn1.running_mean.mean()), rel=1e-6)


def test_torchscript_keeps_user_layers_as_candidates(tmp_path):
    from fixtures.models.torch_transformer import build

    path = str(tmp_path / "block.pt")
    torch.jit.script(build()).save(path)
    layers = by_path(inventory(path))
    assert layers["input_layernorm"].kind.endswith("LlamaRMSNorm") and not layers["input_layernorm"].confirmed
    assert layers["input_layernorm"].eps == 1e-6  # a scripted module keeps its attributes
    assert layers["head_norm"].eps == MACHINE_EPS
