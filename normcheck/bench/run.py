"""Running a plan: every case built, timed and measured into a record, in a fixed order.

A case that cannot run is a skip row, one that fails an error row, one that runs out of memory
an "oom" row; the run goes on after each. Ctrl-C stops it and keeps what was measured.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from normcheck.bench import metrics, stats
from normcheck.bench.bandwidth import CopyBandwidth, copy_bandwidth
from normcheck.bench.env import environment, gpu_info
from normcheck.bench.inputs import bench_problem
from normcheck.bench.memory import WHAT as CPU_MEMORY
from normcheck.bench.memory import rss_probe, steady_malloc
from normcheck.bench.plan import BenchPlan, Source
from normcheck.bench.records import ERROR, OK, OOM, SKIP, BenchCase, BenchReport, BenchResult
from normcheck.bench.shapes import BenchShape
from normcheck.bench.target import Target
from normcheck.bench.timer import Measurement, TimerSettings, host_flush, measure_cuda_events, measure_host
from normcheck.frameworks import bench_module
from normcheck.frameworks.base import BenchModule, Implementation, Unsupported
from normcheck.problem import Problem
from normcheck.verify.run import missing_extension

Progress = Callable[[BenchResult], None]


def run(plan: BenchPlan, settings: TimerSettings, cpus: list[int], progress: Progress | None = None) -> BenchReport:
    """Time every case of ``plan`` in this process; Ctrl-C ends the run early with ``interrupted``
    set. (``normcheck bench`` runs the same steps in a worker process: engine/bench_tasks.py.)"""
    start = time.perf_counter()
    report, threads = header(plan, settings, cpus)
    try:
        for _, result in results(plan, settings, threads, report):
            report.results.append(result)
            if progress:
                progress(result)
    except KeyboardInterrupt:
        report.interrupted = True
    report.results = with_baseline(report.results, plan.baseline)
    report.seconds = time.perf_counter() - start
    return report


def header(
    plan: BenchPlan, settings: TimerSettings, cpus: list[int], copy: CopyBandwidth | None = None
) -> tuple[BenchReport, dict[str, int | None]]:
    """The report without results: the environment, the settings and the copy bandwidth (measured
    here unless ``copy`` is given), and the thread count in effect per framework."""
    steady = steady_malloc() if plan.device == "cpu" else None
    threads = _set_threads(plan)
    gpu = gpu_info(plan.device)
    report = BenchReport(
        env=environment([s.name for s in plan.sources if s.name != "user"], plan.device, plan.threads, cpus, gpu),
        settings={
            "threads": plan.threads,
            "threads_in_effect": threads,
            "min_time_s": settings.min_time,
            "max_time_s": settings.max_time,
            "threshold": settings.threshold,
            "baseline": plan.baseline,
            "modes": list(plan.modes),
            "passes": list(plan.passes),
            "bytes_formula": metrics.FORMULA,
            "memory": CPU_MEMORY
            if plan.device == "cpu"
            else "CUDA: the framework's allocator peak above the "
            "level before the call (torch, TensorFlow; none for JAX and ONNX Runtime)",
            "notes": list(plan.notes),
            "malloc": {
                True: "glibc thresholds fixed: mmap 32 MiB, no trim",
                False: "as the C library sets it",
                None: "not set (CUDA run)",
            }[steady],
        },
    )
    copy = copy or copy_bandwidth(plan.device, settings)
    report.settings["copy_bandwidth"] = {"gbps": copy.gbps, "how": copy.how}
    report.settings["dram_gbps"] = metrics.dram_gbps(gpu["name"]) if gpu else None
    return report, threads


def results(
    plan: BenchPlan, settings: TimerSettings, threads: dict[str, int | None], report: BenchReport, start: int = 0
) -> Iterator[tuple[int, BenchResult]]:
    """(row number, record) for every row of ``plan`` from row ``start`` on, in run order."""
    copy, dram = report.settings["copy_bandwidth"]["gbps"], report.settings["dram_gbps"]
    for i, result in _cases(plan, settings, threads, start):
        yield i, replace(result, copy_gbps=copy, dram_gbps=dram)


def _set_threads(plan: BenchPlan) -> dict[str, int | None]:
    if plan.device != "cpu":
        return {}
    return {s.name: bench_module(_fw(s)).set_threads(plan.threads) for s in plan.sources}


def _fw(source: Source) -> str:
    """The framework whose bench module times the source's implementations (user code's: its form's)."""
    impls = [i for group in source.impls.values() for i in group]
    return impls[0].framework if impls else source.name


def _planned(plan: BenchPlan) -> Iterator[tuple[BenchCase, BenchModule, Implementation, BenchShape]]:
    """Every row of ``plan`` in run order: the case, its target module, implementation and shape."""
    for op in plan.ops:
        for shape, dtype, pass_, (source, impl, fw, variant) in itertools.product(
            plan.shapes[op], plan.dtypes, plan.passes, _timed(plan, op)
        ):
            case = BenchCase(
                op,
                shape.shape,
                shape.params.label(),
                dtype,
                source,
                impl.name,
                plan.device,
                pass_,
                variant,
                fw.layout(impl, shape.shape),
                shape.model,
            )
            yield case, fw, impl, shape


def _timed(plan: BenchPlan, op: str) -> list[tuple[str, Implementation, BenchModule, str]]:
    """(source, implementation, its target module, variant) for each way ``op`` is timed, in order."""
    out = []
    for source in plan.sources:
        for impl in source.impls.get(op, []):
            fw = bench_module(impl.framework)
            out += [(source.name, impl, fw, variant) for variant in _variants(fw, plan.modes)]
    return out


def planned_rows(plan: BenchPlan) -> int:
    """How many rows ``run`` produces for ``plan`` (loads the target modules, not the inputs)."""
    return sum(1 for _ in _planned(plan))


def planned_cases(plan: BenchPlan) -> list[BenchCase]:
    """The rows ``run`` produces for ``plan``, in order (loads the target modules, not the inputs)."""
    return [case for case, *_ in _planned(plan)]


def _cases(
    plan: BenchPlan, settings: TimerSettings, threads: dict[str, int | None], start: int = 0
) -> Iterator[tuple[int, BenchResult]]:
    problems: dict[tuple, Problem] = {}  # one input set per op, shape and dtype, shared by its rows
    for i, (case, fw, impl, shape) in enumerate(_planned(plan)):
        if i < start:
            continue
        key = (case.op, case.shape, case.dtype)
        if key not in problems:
            problems = {key: bench_problem(case.op, shape.shape, shape.params, case.dtype)}
        yield i, time_case(case, fw, impl, problems[key], settings, threads.get(case.framework))


def _variants(fw: BenchModule, modes: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(v for mode in modes for v in fw.MODES[mode]))


def time_case(
    case: BenchCase,
    fw: BenchModule,
    impl: Implementation,
    problem: Problem,
    settings: TimerSettings,
    threads: int | None = None,
) -> BenchResult:
    """One case into one record: measured, or a skip, error or oom row with the reason."""
    base = BenchResult(case, threads=threads)
    lacking = missing_extension(problem, impl, case.framework)
    if lacking:
        return replace(base, status=SKIP, reason=lacking)
    try:
        target = fw.build(impl, problem, case.pass_, case.mode, case.device)
        if case.framework == "user":
            target = _checked(target)
        m = measure(target, settings, case.device)
        peak = _peak_memory(target, case.device)
        compiled, setup_compile, notes = target.compiled, target.setup_compile_s, target.notes
    except Unsupported as e:
        return replace(base, status=SKIP, reason=_line(e))
    except KeyboardInterrupt:
        from normcheck.engine import worker

        if not worker.IN_WORKER:
            raise  # timed in the caller's own process: this may be the caller's Ctrl-C
        return replace(base, status=ERROR, reason=_escaped(KeyboardInterrupt()))
    except BaseException as e:  # a failing case is a row (sys.exit and KeyboardInterrupt from the code too)
        kind = fw.classify(e)
        _release(case.device)
        status = {"oom": OOM, "skip": SKIP}.get(kind or "", ERROR)
        reason = _line(e) if status != ERROR else f"{type(e).__name__}: {_line(e)}"
        if not isinstance(e, Exception):
            from normcheck.engine.deaths import escaped

            reason = escaped(e)
        return replace(base, status=status, reason=reason)
    compile_s = None
    if compiled:
        compile_s = max(0.0, m.first_call_s - stats.median(m.samples)) + setup_compile
    return replace(
        base,
        status=OK,
        samples=m.samples,
        block=m.block,
        timer=m.timer,
        converged=m.converged,
        first_call_s=m.first_call_s,
        compile_s=compile_s,
        bytes_moved=metrics.model_bytes(case.op, problem.shape, problem.params, case.dtype, case.pass_).total,
        peak_memory=peak,
        notes=notes,
    )


class NoOutput(Exception):
    """The user's implementation returned None: there is nothing it computed to time."""


def _checked(target: Target) -> Target:
    """The user's call, refusing a None result (an implementation that forgot its return)."""
    call = target.call

    def checked() -> Any:
        out = call()
        if out is None:
            raise NoOutput("the implementation returned None instead of its output")
        return out

    return replace(target, call=checked)


def _escaped(e: BaseException) -> str:
    from normcheck.engine.deaths import escaped

    return escaped(e)


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def measure(target: Target, settings: TimerSettings, device: str) -> Measurement:
    if device == "cpu":
        return measure_host(target, settings)
    if target.cuda_stream:
        return measure_cuda_events(target, settings, device)
    # without torch there is nothing to flush the L2 with; the calls are still timed one per sample
    return measure_host(target, settings, flush=host_flush(device) or (lambda: None))


def _peak_memory(target: Target, device: str) -> int | None:
    probe = rss_probe() if device == "cpu" else target.memory
    if probe is None:
        return None
    probe.reset()
    out: Any = target.call()
    target.sync(out)
    peak = probe.peak_above()
    del out
    return peak


def _release(device: str) -> None:
    """After an out-of-memory error: give cached device memory back before the next case."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_baseline(results: list[BenchResult], baseline: str | None) -> list[BenchResult]:
    """Each measured row with the median of the baseline framework's first implementation on the
    same case, in the same mode where it ran in it, else its eager row."""
    if baseline is None:
        return results
    index: dict[tuple, BenchResult] = {}
    for r in results:
        if r.case.framework == baseline and r.measured:
            index.setdefault((*r.case.group(), r.case.mode), r)
    out = []
    for r in results:
        ref = index.get((*r.case.group(), r.case.mode)) or index.get((*r.case.group(), "eager"))
        out.append(replace(r, baseline_s=ref.median) if ref is not None and r.measured else r)
    return out


__all__ = ["CopyBandwidth", "header", "planned_cases", "planned_rows", "results", "run", "time_case", "with_baseline"]
