"""Default shapes: the activations these ops normalize in real models.

CNN ops take (N, C, H, W) activations of a stage; layer and RMS norm and their fused residual
adds take (tokens, hidden); adaptive layer norm takes DiT's (N, tokens, hidden); Weight
Standardization the input of a BiT ResNet's 3x3 convolutions. The CPU set uses the batch (or
token count) of CPU inference; the CUDA set that of training or batched serving on one GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from normcheck.ops import OpParams
from normcheck.ops.quantize import Quantization

GROUPS = 32  # group norm's G in every model below


@dataclass(frozen=True)
class BenchShape:
    op: str
    shape: tuple[int, ...]
    params: OpParams
    model: str  # where it comes from


def _cnn(op: str, batch: int, stages: list[tuple[int, int, str]], params: OpParams) -> list[BenchShape]:
    return [BenchShape(op, (batch, c, hw, hw), params, model) for c, hw, model in stages]


def _tokens(op: str, tokens: int, hiddens: list[tuple[int, str]]) -> list[BenchShape]:
    return [BenchShape(op, (tokens, h), OpParams(normalized_ndim=1), model) for h, model in hiddens]


# ResNet-50 at 224x224: the stem and the widest activation of three of its stages
RESNET = [
    (64, 112, "ResNet-50 stem"),
    (256, 56, "ResNet-50 stage 1"),
    (512, 28, "ResNet-50 stage 2"),
    (2048, 7, "ResNet-50 stage 4"),
]
# Stable Diffusion 1.5's UNet at 512x512 (64x64 latents): its four resolutions
UNET = [
    (320, 64, "SD-1.5 UNet 64x64"),
    (640, 32, "SD-1.5 UNet 32x32"),
    (1280, 16, "SD-1.5 UNet 16x16"),
    (1280, 8, "SD-1.5 UNet 8x8"),
]
VAE = [(128, 512, "SD-1.5 VAE decoder 512x512")]
# Johnson et al.'s fast style transfer network at 256x256
STYLE = [(32, 256, "style transfer 256x256"), (64, 128, "style transfer 128x128"), (128, 64, "style transfer 64x64")]
LN_HIDDEN = [(768, "BERT-base / GPT-2"), (1024, "BERT-large / ViT-L"), (4096, "Llama-2 7B"), (8192, "Llama-2 70B")]
RMS_HIDDEN = [(768, "T5-base"), (4096, "Llama-2 7B"), (5120, "Llama-2 13B"), (8192, "Llama-2 70B")]
# DiT (Peebles & Xie): 256 tokens at 256x256 (32x32 latents, patch 2), 1024 at 512x512
DIT = [(256, 768, "DiT-B/2 256x256"), (256, 1152, "DiT-XL/2 256x256"), (1024, 1152, "DiT-XL/2 512x512")]
# BiT-R50x1 (GN+WS ResNet-50) at 224x224: each stage's 3x3 convolution, C in and C out
BIT = [
    (64, 56, "BiT-R50x1 stage 1 3x3"),
    (128, 28, "BiT-R50x1 stage 2 3x3"),
    (256, 14, "BiT-R50x1 stage 3 3x3"),
    (512, 7, "BiT-R50x1 stage 4 3x3"),
]

BN = OpParams(running_stats=True, mode="train")
GN = OpParams(groups=GROUPS)
IN = OpParams()


def default_shapes(op: str, device: str) -> list[BenchShape]:
    cuda = device.startswith("cuda")
    if op == "adaln":
        return [BenchShape(op, (32 if cuda else 2, t, d), OpParams(), model) for t, d, model in DIT]
    if op in ("ws", "ws_gn"):
        groups = GROUPS if op == "ws_gn" else None
        return [
            BenchShape(op, (32 if cuda else 1, c, hw, hw), OpParams(conv=(c, 3, 1), groups=groups), model)
            for c, hw, model in BIT
        ]
    if op == "bn":
        return _cnn("bn", 64 if cuda else 8, RESNET, BN)
    if op == "gn":
        shapes = _cnn("gn", 8 if cuda else 2, UNET, GN)
        return shapes + (_cnn("gn", 1, VAE, GN) if cuda else [])
    if op == "in":
        return _cnn("in", 16 if cuda else 1, STYLE, IN)
    tokens = 8192 if cuda else 512  # 4 sequences of 2048 tokens; one of 512
    return _tokens(op, tokens, LN_HIDDEN if op in ("ln", "add_ln") else RMS_HIDDEN)


def with_settings(shapes: list[BenchShape], variant: str | None, quant: Quantization | None) -> list[BenchShape]:
    """``shapes`` timed with an op variant (gemma, nobias, ...) or an FP8-quantized output."""
    if variant is None and quant is None:
        return shapes
    return [replace(s, params=replace(s.params, variant=variant, quant=quant)) for s in shapes]


def quick_shapes(op: str, device: str) -> list[BenchShape]:
    """The quick profile's shapes: the smallest and the largest default shape of ``op``, the two
    ends of the range, where per-call overhead dominates and where memory bandwidth does."""
    shapes = sorted(default_shapes(op, device), key=lambda s: _numel(s.shape))
    return [shapes[0], shapes[-1]] if len(shapes) > 1 else shapes


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def shape_params(op: str, shape: tuple[int, ...], groups: int | None = None) -> OpParams:
    """The params a user-given shape is timed with."""
    if op in ("ln", "rms", "add_ln", "add_rms"):
        return OpParams(normalized_ndim=1)
    if op == "adaln":
        return OpParams()
    if op in ("ws", "ws_gn"):  # a 3x3 convolution with padding 1, as many channels out as in
        c = shape[1] if len(shape) > 1 else 1
        return OpParams(conv=(c, 3, 1), groups=_groups(c, groups) if op == "ws_gn" else None)
    if op == "bn":
        return BN
    if op == "gn":
        if len(shape) < 2:  # no channel axis: validate() names what group norm needs
            return OpParams(groups=groups if groups is not None else 1)
        return OpParams(groups=_groups(shape[1], groups))
    return IN


def _groups(c: int, groups: int | None) -> int:
    """G for C channels: the one given, else the largest divisor of C up to 32."""
    if groups is not None:
        return groups
    return max((d for d in range(1, min(GROUPS, c) + 1) if c % d == 0), default=1)
