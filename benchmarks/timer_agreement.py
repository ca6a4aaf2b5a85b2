"""Timer agreement: normcheck's timer against established ones on the same targets.

    python benchmarks/timer_agreement.py [--threads 1] [--rounds 3] [--device cpu|cuda] [--malloc steady]
                                         [--verbose]

Each case is the torch target normcheck bench times (the F.* implementation, eager, float32),
forward and backward, on five shapes: group norm (2,320,64,64) G=32, layer norm and RMS norm
(512,4096), batch norm (8,256,56,56) in training mode, instance norm (1,64,128,128).

CPU: normcheck.bench.timer.measure_host against torch.utils.benchmark.Timer.adaptive_autorange,
both with the same thread count, the same threshold (IQR/median 0.1) and time limits.
CUDA: normcheck.bench.timer.measure_cuda_events against triton.testing.do_bench (where triton is
installed; per-call CUDA events with the L2 flushed, as normcheck does) and
torch.utils.benchmark (blocks of back-to-back calls, L2 warm, device synchronised by its timer).

The timers are interleaved: every round runs normcheck then the reference(s) on the same target,
and a timer's figure is the median of its per-round medians, so a drift of the machine (clock
frequency, another process) lands on both sides instead of biasing whichever ran last.

--malloc steady (the default, as normcheck bench runs) fixes glibc malloc's trim and mmap
thresholds before anything is allocated; --malloc default leaves glibc adapting them to the
allocations it sees, so whether an op's large temporaries are reused or unmapped and page-faulted
back on every call depends on the allocation history; --verbose shows the minor page faults per call.

Prints a table of medians (µs) and ratios normcheck / reference, and exits 1 when a judged ratio
falls outside [0.9, 1.1]: on CPU the one against torch.utils.benchmark, on CUDA the one against
do_bench (same method), else against torch.utils.benchmark, whose warm-L2 figures can legitimately
be lower for inputs that fit in the L2 cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # normcheck from this checkout

LOW, HIGH = 0.9, 1.1
CASES: list[tuple[str, tuple[int, ...]]] = [
    ("gn", (2, 320, 64, 64)),
    ("ln", (512, 4096)),
    ("rms", (512, 4096)),
    ("bn", (8, 256, 56, 56)),
    ("in", (1, 64, 128, 128)),
]
GROUPS = 32


@dataclass
class Row:
    op: str
    shape: tuple[int, ...]
    params: str
    pass_: str
    normcheck: list[float]  # per-round medians, seconds
    references: dict[str, list[float]]  # reference timer -> per-round medians, seconds
    log: list[str]  # every measurement, for --verbose

    def ratio(self, name: str) -> float:
        return statistics.median(self.normcheck) / statistics.median(self.references[name])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both timers (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N where torch sees a GPU")
    parser.add_argument("--max-time", type=float, default=2.0, help="seconds of samples at most per measurement")
    parser.add_argument(
        "--malloc",
        choices=("default", "steady"),
        default="steady",
        help="steady: fix glibc malloc's trim and mmap thresholds (see steady_malloc)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print every measurement: median, block size, page faults per call"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads take a positive integer")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device takes cpu, cuda or cuda:N, not {args.device!r}")
    return args


def limit_threads(n: int) -> None:
    """As normcheck bench does before any framework is imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


# -- the timers ----------------------------------------------------------------------------
Measure = Callable[[Any], tuple[float, int, str]]  # target -> (median s, timed calls, how)


def normcheck_timer(device: str, settings: Any) -> Measure:
    from normcheck.bench import stats, timer

    def measure(target: Any) -> tuple[float, int, str]:
        if device == "cpu":
            m = timer.measure_host(target, settings)
        else:
            m = timer.measure_cuda_events(target, settings, device)
        return stats.median(m.samples), m.block * len(m.samples), f"block {m.block} x {len(m.samples)} samples"

    return measure


def tub_timer(threads: int, settings: Any) -> Measure:
    from torch.utils.benchmark import Timer

    def measure(target: Any) -> tuple[float, int, str]:
        t = Timer(stmt="target.call()", globals={"target": target}, num_threads=threads)
        m = t.adaptive_autorange(
            threshold=settings.threshold, min_run_time=settings.min_time, max_run_time=settings.max_time
        )
        n = len(m.raw_times)
        return m.median, m.number_per_run * n, f"block {m.number_per_run} x {n} samples"

    return measure


def do_bench_timer(device: str) -> Measure | None:
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    import torch

    def measure(target: Any) -> tuple[float, int, str]:
        with torch.cuda.device(device):
            # warmup and rep are milliseconds; the return value is milliseconds
            ms = do_bench(target.call, warmup=25, rep=100, return_mode="median")
        return ms / 1e3, max(1, round(100 / ms)), "warmup 25 ms, rep 100 ms"

    return measure


# -- the run -------------------------------------------------------------------------------
def build_target(op: str, shape: tuple[int, ...], pass_: str, device: str) -> tuple[Any, str]:
    from normcheck import frameworks
    from normcheck.bench.inputs import bench_problem
    from normcheck.bench.shapes import shape_params
    from normcheck.frameworks import bench_module

    params = shape_params(op, shape, GROUPS)
    impl = frameworks.load("torch").implementations(op)[0]
    problem = bench_problem(op, shape, params, "float32")
    return bench_module("torch").build(impl, problem, pass_, "eager", device), params.label()


def run_case(op: str, shape: tuple[int, ...], pass_: str, device: str, rounds: int, timers: dict[str, Measure]) -> Row:
    target, params = build_target(op, shape, pass_, device)
    names = [n for n in timers if n != "normcheck"]
    row = Row(op, shape, params, pass_, [], {n: [] for n in names}, [])
    for _ in range(rounds):
        row.normcheck.append(timed(timers["normcheck"], target, "normcheck", row.log))
        for name in names:
            row.references[name].append(timed(timers[name], target, name, row.log))
    return row


def timed(measure: Measure, target: Any, name: str, log: list[str]) -> float:
    """The median of one measurement; what it did goes to ``log``, with the page faults per call
    (warm-up included), which show the allocator returning memory to the system and taking it back."""
    before = minor_faults()
    median, calls, how = measure(target)
    faults = minor_faults() - before
    log.append(f"{name}: {median * 1e6:.1f} µs, {how}, {faults / calls:.0f} minor page faults per call")
    return median


def minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def steady_malloc() -> None:
    """The allocator settings normcheck bench runs every CPU case under (see its steady_malloc)."""
    from normcheck.bench.memory import steady_malloc as fix

    if not fix():
        raise SystemExit("timer_agreement: mallopt failed (--malloc steady needs glibc)")


def busy_machine(threads: int) -> str:
    """A warning when other processes ran beside this one (then neither timer can be trusted)."""
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load - threads > 0.5:
        return (
            f"warning: 1-minute load average {load:.1f} on {cpus} CPUs while timing with {threads} thread(s): "
            "other processes compete for the CPUs, caches and memory bandwidth"
        )
    return ""


# -- the report ----------------------------------------------------------------------------
def judged(names: list[str]) -> str:
    return "do_bench" if "do_bench" in names else "torch.utils.benchmark"


def table(rows: list[Row]) -> list[str]:
    names = list(rows[0].references)
    head = ["op", "shape", "params", "pass", "normcheck µs"]
    for name in names:
        head += [f"{name} µs", "ratio"]
    head.append("agree?")
    lines = [head]
    for r in rows:
        cells = [r.op, "x".join(map(str, r.shape)), r.params, r.pass_, f"{statistics.median(r.normcheck) * 1e6:.1f}"]
        for name in names:
            cells += [f"{statistics.median(r.references[name]) * 1e6:.1f}", f"{r.ratio(name):.3f}"]
        cells.append("yes" if LOW <= r.ratio(judged(names)) <= HIGH else "NO")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def details(r: Row) -> list[str]:
    return [f"{r.op} {r.shape} {r.pass_}:"] + [f"  {line}" for line in r.log]


def main() -> int:
    args = parse_args()
    limit_threads(args.threads)
    if args.malloc == "steady":
        steady_malloc()

    import torch

    from normcheck.bench.records import PASSES
    from normcheck.bench.timer import TimerSettings

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("timer_agreement: torch sees no CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    settings = TimerSettings(max_time=args.max_time)
    timers: dict[str, Measure] = {"normcheck": normcheck_timer(device, settings)}
    if device.startswith("cuda"):
        bench = do_bench_timer(device)
        if bench is not None:
            timers["do_bench"] = bench
        else:
            print("triton is not installed: comparing with torch.utils.benchmark only (warm L2)", file=sys.stderr)
    timers["torch.utils.benchmark"] = tub_timer(args.threads, settings)

    rows = []
    for op, shape in CASES:
        for pass_ in PASSES:
            rows.append(run_case(op, shape, pass_, device, args.rounds, timers))
            if args.verbose:
                print("\n".join(details(rows[-1])), flush=True)
    where = (
        f"{device}, {torch.get_num_threads()} thread(s)"
        if device == "cpu"
        else f"{device} ({torch.cuda.get_device_name(device)})"
    )
    print(
        f"torch {torch.__version__}, float32, eager, {where}, malloc {args.malloc}; "
        f"median of {args.rounds} interleaved rounds; "
        f"ratio = normcheck / reference, agreement within [{LOW}, {HIGH}] of {judged(list(rows[0].references))}"
    )
    print("\n".join(table(rows)))
    busy = busy_machine(args.threads) if device == "cpu" else ""
    if busy:
        print(busy, file=sys.stderr)
    names = list(rows[0].references)
    bad = [r for r in rows if not LOW <= r.ratio(judged(names)) <= HIGH]
    if bad:
        print(f"{len(bad)} of {len(rows)} cases disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
