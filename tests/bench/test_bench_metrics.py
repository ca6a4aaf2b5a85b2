"""The bytes model and the DRAM table."""

from __future__ import annotations

from normcheck.bench.metrics import dram_gbps, model_bytes
from normcheck.ops import OpParams


def test_forward_moves_two_inputs_and_the_parameters():
    b = model_bytes("gn", (2, 64, 8, 8), OpParams(groups=32), "float32", "forward")
    x = 2 * 64 * 8 * 8 * 4
    assert b.x == x
    assert b.total == 2 * x + 2 * 64 * 4


def test_backward_moves_three_inputs_and_writes_parameter_gradients():
    b = model_bytes("ln", (512, 768), OpParams(normalized_ndim=1), "bfloat16", "backward")
    x = 512 * 768 * 2
    assert b.total == 3 * x + 3 * 768 * 2  # read weight, write dweight and dbias


def test_rms_has_no_bias_and_batch_norm_training_updates_its_statistics():
    rms = model_bytes("rms", (4, 8), OpParams(normalized_ndim=1), "float32", "forward")
    assert rms.params == 8 * 4
    bn = model_bytes("bn", (8, 16, 4, 4), OpParams(running_stats=True, mode="train"), "float32", "forward")
    assert bn.state == 4 * 16 * 4
    no_affine = model_bytes("in", (1, 3, 4, 4), OpParams(affine=False), "float64", "forward")
    assert no_affine.total == 2 * 48 * 8


def test_dram_bandwidth_by_gpu_name():
    assert dram_gbps("NVIDIA H100 80GB HBM3") == 3350
    assert dram_gbps("NVIDIA H100 PCIe") == 2000
    assert dram_gbps("NVIDIA H200") == 4800
    assert dram_gbps("NVIDIA A100-SXM4-80GB") == 2039
