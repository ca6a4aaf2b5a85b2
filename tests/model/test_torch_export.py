"""The inventory of torch.export programs (.pt2 files): the graph's aten norm calls by module."""

from __future__ import annotations

import pytest
from _require import require

torch = require("torch")

from _models import by_path, inventory

from normcheck.model.records import CANDIDATE, EVAL, MACHINE_EPS, NEW, TRAIN


def _saved(tmp_path, model, *example) -> str:
    path = str(tmp_path / "model.pt2")
    torch.export.save(torch.export.export(model, example), path)
    return path


def test_the_cnn_exported_in_eval_and_in_training(tmp_path):
    from fixtures.models.torch_cnn import build

    for model, mode in ((build(), EVAL), (build().train(), TRAIN)):
        inv = inventory(_saved(tmp_path, model, torch.randn(2, 3, 16, 16)))
        assert (inv.loader, inv.framework) == ("torch.export", "torch")
        layers = by_path(inv)
        assert list(layers) == ["bn1", "gn2"]
        bn, gn = layers["bn1"], layers["gn2"]
        assert (bn.kind, bn.eps, bn.momentum, bn.momentum_weights, bn.mode, bn.axes) == (
            "torch.nn.BatchNorm2d",
            1e-4,
            pytest.approx(0.2),
            NEW,
            mode,
            (0, 2, 3),
        )
        assert bn.param("running_var").name == "bn1.running_var" and bn.dtype == "float32"
        assert (gn.kind, gn.eps, gn.groups, gn.feature_shape) == ("torch.nn.GroupNorm", 1e-6, 4, (16,))


def test_user_layers_in_an_exported_block_are_candidates_and_functional_calls_are_named(tmp_path):
    from fixtures.models.torch_transformer import build

    inv = inventory(_saved(tmp_path, build(), torch.randn(2, 5, 32)))
    layers = by_path(inv)
    assert list(layers) == ["input_layernorm", "post_attention_layernorm", "final_norm", "head_norm"]
    llama = layers["input_layernorm"]
    assert (llama.basis, llama.op, llama.eps, llama.param("weight").name) == (
        CANDIDATE,
        "rms",
        None,
        "input_layernorm.weight",
    )
    assert (layers["final_norm"].eps, layers["final_norm"].axes) == (1e-5, (-1,))
    assert layers["head_norm"].eps == MACHINE_EPS


def test_a_functional_norm_call_inside_a_module_is_listed_under_it(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.layer_norm(self.proj(x), (8,), eps=1e-3)
            return torch.nn.functional.group_norm(y.unsqueeze(-1), 2, eps=1e-4)

    inv = inventory(_saved(tmp_path, Net(), torch.randn(2, 8)))
    assert [(layer.path, layer.op, layer.eps, layer.kind) for layer in inv.layers] == [
        ("(model)/layer_norm", "ln", 1e-3, "aten.layer_norm in " + f"{Net.__module__}.{Net.__qualname__}"),
        ("(model)/group_norm", "gn", 1e-4, "aten.group_norm in " + f"{Net.__module__}.{Net.__qualname__}"),
    ]
