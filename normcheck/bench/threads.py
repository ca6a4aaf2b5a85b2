"""One CPU thread count for every framework, fixed before any of them is imported.

Each framework reads its own variables when its runtime starts (OpenMP and MKL for PyTorch and
NumPy's BLAS, TF_NUM_*_THREADS for TensorFlow, XLA_FLAGS for JAX) and sizes its pools from the
CPUs the process may run on, so the process is also pinned to ``n`` CPUs: that caps every
framework, including those without a thread setting of their own. The target modules then apply
each framework's own API (torch.set_num_threads, ORT's session options) and report what is in
effect, which the records keep.
"""

from __future__ import annotations

import os

from normcheck.errors import UsageError

XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def check_threads(n: int) -> list[int]:
    """The CPUs a run on ``n`` threads is pinned to; UsageError when ``n`` cannot be had."""
    cpus = available_cpus()
    if n < 1:
        raise UsageError(f"--threads must be at least 1, not {n}")
    if n > len(cpus):
        raise UsageError(f"--threads {n}: this process may use {len(cpus)} CPU(s)")
    return cpus[:n]


def apply_threads(n: int) -> list[int]:
    """Set every framework's thread variables to ``n`` and pin the process to ``n`` CPUs; the CPUs."""
    chosen = check_threads(n)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and XLA_ONE_THREAD not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, chosen)
    return chosen
