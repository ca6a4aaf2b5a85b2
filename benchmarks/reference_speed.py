"""Reference speed: NumPy group norm forward+backward vs torch's, float64, same threads.

    python benchmarks/reference_speed.py [--threads 1] [--repeat 7]

Prints the median of the repeats for each; the reference should be no slower than torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--shape", default="16,256,32,32")
    parser.add_argument("--groups", type=int, default=32)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    from normcheck.ops import OpParams
    from normcheck.ops.group_norm import OP

    torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    norm = OP.normalization(shape, OpParams(groups=args.groups))

    def reference() -> None:
        _, cache = norm.forward(x, 1e-5, w, b)
        norm.backward(dy, cache)

    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    tdy = torch.tensor(dy)

    def torch_fwd_bwd() -> None:
        torch.nn.functional.group_norm(tx, args.groups, tw, tb, 1e-5).backward(tdy)

    t_ref = median_time(reference, args.repeat)
    t_torch = median_time(torch_fwd_bwd, args.repeat)
    print(f"group norm {args.shape} G={args.groups} float64, {args.threads} thread(s), median of {args.repeat}")
    print(f"  numpy reference forward+backward: {t_ref * 1e3:8.1f} ms")
    print(f"  torch forward+backward:           {t_torch * 1e3:8.1f} ms")
    print(f"  reference / torch:                {t_ref / t_torch:8.2f}x")


if __name__ == "__main__":
    main()
