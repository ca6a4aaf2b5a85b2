"""Wall time of ``normcheck model --input-shape 1,3,224,224``, the full per-layer check, on a
ResNet-50-sized model (53 BatchNorm2d layers, 25.6 M parameters): a PyTorch module built by a
factory (``benchmarks/model_inventory.py:build_resnet50``) and its ONNX export.

    python benchmarks/model_check.py [--repeat 1] [--only torch,onnx] [--kinds captured,...]

Every run is a fresh ``python -m normcheck model`` process (worker start, import, load, one
forward pass capturing every layer's input, then for each layer: its real activation and the four
hostile input kinds, forward and backward for torch, forward for ONNX, judged against the float64
reference). The goal is 60 s on two cores for the torch model. Prints one line per model and
exits 0; the numbers are for docs/model.md, not a test.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_inventory import EXPECTED_BN, ROOT, SPEC, export_onnx


def run(model: str, kinds: str | None) -> tuple[float, dict]:
    """(wall seconds, the JSON summary) of one full check."""
    args = [sys.executable, "-m", "normcheck", "model", model, "--input-shape", "1,3,224,224", "--format", "json"]
    if kinds:
        args += ["--kinds", kinds]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "NORMCHECK_INLINE": "0"})
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"normcheck model {model} failed ({proc.returncode}): {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    return wall, {**doc["summary"], "layers": doc["model"]["summary"]["counts"].get("bn", 0)}


def report(label: str, model: str, repeat: int, kinds: str | None) -> None:
    walls, summary = [], {}
    for _ in range(repeat):
        wall, summary = run(model, kinds)
        walls.append(wall)
    status = "ok" if summary["layers"] == EXPECTED_BN else f"expected {EXPECTED_BN}"
    print(
        f"{label:<24} wall {statistics.median(walls):6.1f} s (min {min(walls):.1f})  {summary['layers']} layers "
        f"({status}), {summary['pass']} passed, {summary['fail']} failed, {summary['error']} errors, "
        f"{summary['skip']} skipped",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", default="torch,onnx")
    parser.add_argument("--kinds", default=None, help="--kinds for normcheck model (default: its own)")
    a = parser.parse_args()
    only = a.only.split(",")
    print(f"normcheck model --input-shape 1,3,224,224 on a ResNet-50, {os.cpu_count()} CPUs, median of {a.repeat}")
    if "torch" in only:
        report("torch.nn.Module factory", SPEC, a.repeat, a.kinds)
    if "onnx" in only:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "resnet50.onnx")
            export_onnx(path)
            report("ONNX export", path, a.repeat, a.kinds)


if __name__ == "__main__":
    main()
