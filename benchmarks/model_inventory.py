"""Wall time of ``normcheck model --list`` on a ResNet-50-sized model (53 BatchNorm2d layers,
25.6 M parameters), as a PyTorch module built by a factory and as its ONNX export.

    python benchmarks/model_inventory.py [--repeat 3] [--only torch,onnx]

torchvision is not needed: ``build_resnet50`` below builds the same architecture (bottleneck
blocks 3, 4, 6, 3; a BatchNorm2d after every convolution, downsample branches included), and the
command loads it from this file (``benchmarks/model_inventory.py:build_resnet50``). Every run is
a fresh ``python -m normcheck model`` process, as a user starts it; the figures are wall-clock
seconds from start to exit (median over --repeat runs) and the worker's own seconds (loading,
building and inspecting the model, from the JSON summary). The ONNX file is exported once,
before timing, with PyTorch's TorchScript exporter (constant folding off, so every batch norm
stays a BatchNormalization node).

Prints one line per run and exits 0; the numbers are for docs/model.md, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{Path(__file__).resolve()}:build_resnet50"
EXPECTED_BN = 53


def build_resnet50():  # -> torch.nn.Module (torch is imported only here: the script's parent runs without it)
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet50(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._layer(64, 3)
            self.layer2 = self._layer(128, 4, 2)
            self.layer3 = self._layer(256, 6, 2)
            self.layer4 = self._layer(512, 3, 2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, 1000)

        def _layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
                )
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet50().eval()


def export_onnx(path: str) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            build_resnet50(),
            (torch.randn(1, 3, 224, 224),),
            path,
            dynamo=False,
            opset_version=17,
            do_constant_folding=False,
        )


def run(model: str) -> tuple[float, float, int]:
    """(wall seconds, the worker's seconds, batch norm layers found) of one inventory."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "normcheck", "model", model, "--list", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NORMCHECK_INLINE": "0"},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"normcheck model {model} failed ({proc.returncode}): {proc.stderr.strip()}")
    summary = json.loads(proc.stdout)["summary"]
    return wall, summary["seconds"], summary["counts"].get("bn", 0)


def report(label: str, model: str, repeat: int) -> None:
    walls, inner, found = [], [], 0
    for _ in range(repeat):
        wall, seconds, found = run(model)
        walls.append(wall)
        inner.append(seconds)
    status = "ok" if found == EXPECTED_BN else f"expected {EXPECTED_BN}"
    print(
        f"{label:<24} wall {statistics.median(walls):5.2f} s (min {min(walls):.2f})  "
        f"worker {statistics.median(inner):5.2f} s  {found} batch norm layers ({status})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="torch,onnx")
    a = parser.parse_args()
    only = a.only.split(",")
    print(f"normcheck model --list on a ResNet-50, {os.cpu_count()} CPUs, median of {a.repeat}", flush=True)
    if "torch" in only:
        report("torch.nn.Module factory", SPEC, a.repeat)
    if "onnx" in only:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "resnet50.onnx")
            export_onnx(path)
            size = Path(path).stat().st_size / 1e6
            report(f"ONNX file ({size:.0f} MB)", path, a.repeat)


if __name__ == "__main__":
    main()
