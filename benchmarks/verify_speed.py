"""Wall time of ``normcheck verify``: the default run, each framework alone, and JAX's compilation
cache cold and warm.

    python benchmarks/verify_speed.py [--jobs N] [--only all,torch,tensorflow,jax,onnxruntime,cache]
                                      [--repeat 1]

Every run is a fresh ``python -m normcheck verify`` process, as a user starts it, with its report
thrown away; the figure is wall-clock seconds from start to exit (the median over --repeat runs),
with the case count and peak memory of the process tree (RUSAGE_CHILDREN's max RSS, the largest
single process). "cache" runs JAX alone twice with --compile-cache in an empty cache folder: cold
(compiling and storing) then warm (loading what the first run stored), then the default run with
that warm cache.

Prints one line per run and exits 0; the numbers are for docs/performance.md, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """(wall seconds, cases, exit code) of one verify run."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "normcheck", "verify", *args, "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"verify {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall, json.loads(proc.stdout)["summary"]["cases"], proc.returncode


def report(label: str, args: list[str], repeat: int, env: dict[str, str] | None = None) -> None:
    walls, cases, rc = [], 0, 0
    for _ in range(repeat):
        wall, cases, rc = run(args, env)
        walls.append(wall)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(
        f"{label:<28} {statistics.median(walls):7.1f} s  {cases:6d} cases  exit {rc}  "
        f"max RSS of one process so far {peak:.2f} GB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--only", default="all,torch,tensorflow,jax,onnxruntime,cache")
    parser.add_argument("--repeat", type=int, default=1)
    a = parser.parse_args()
    jobs = [] if a.jobs is None else ["--jobs", str(a.jobs)]
    only = a.only.split(",")
    print(f"normcheck verify wall time, {os.cpu_count()} CPUs, jobs {a.jobs or 'default'}", flush=True)
    if "all" in only:
        report("default (all frameworks)", jobs, a.repeat)
    for fw in ("torch", "tensorflow", "jax", "onnxruntime"):
        if fw in only:
            report(fw, ["--framework", fw, *jobs], a.repeat)
    if "cache" in only:
        with tempfile.TemporaryDirectory() as cache:
            env = {"NORMCHECK_CACHE_DIR": cache}
            report("jax, compile cache cold", ["--framework", "jax", "--compile-cache", *jobs], 1, env)
            report("jax, compile cache warm", ["--framework", "jax", "--compile-cache", *jobs], a.repeat, env)
            report("default, compile cache warm", ["--compile-cache", *jobs], a.repeat, env)


if __name__ == "__main__":
    main()
