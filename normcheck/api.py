"""The Python API, for pytest and notebooks: the same checks as ``normcheck verify``.

import normcheck

def test_my_group_norm():
    normcheck.assert_matches("gn", "mypkg/layers.py:MyGroupNorm")
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from normcheck.engine.jobs import execute
from normcheck.errors import UsageError
from normcheck.verify.request import NUMBER_RANGES, Report, Request

__all__ = ["Report", "assert_matches", "check", "mismatch_report"]


def check(op: str | list[str] | None = None, impl: Any = None, **options: Any) -> Report:
    """Verify ``impl`` (a SPEC string like "pkg/mod.py:Name", or the function or class itself)
    for ``op``; with no ``impl``, the built-in frameworks. ``options`` are the keyword forms of
    verify's flags: framework, backward, style, shapes, groups, normalized_ndim, dtypes, kinds,
    device, seed, rtol, atol, eps, momentum, against, shard, timeout, world_size (batch norm over
    torch.distributed in that many processes), quantize and scale (FP8-quantized output, e.g.
    ``quantize="e4m3", scale="row"``; see docs/quantized.md), policy (a named precision policy
    the forward is held to ulp for ulp: "llama", "gemma", "t5", "native", "fp32-weight"; see
    docs/policies.md), strict, jobs, compile_cache,
    repro (a folder: write a standalone script and .npz reproducing each distinct failure into it,
    as ``normcheck verify --repro``).

    Cases run in worker processes (``jobs`` of them; default one per usable CPU), so the
    code checked cannot end, crash or hang the caller; the caller's signal handlers are left alone.
    An ``impl`` given as an object must be importable by name (a module-level function or class)
    for a worker to load it.

    Raises normcheck.errors.UsageError for options that make no sense; a failing or broken
    implementation is never an exception here, only records in the report.
    """
    call = _call_text(op, impl, options)
    repro = options.pop("repro", None)
    strict = options.pop("strict", False)
    if not isinstance(strict, bool):
        raise UsageError(f"strict must be True or False, got {strict!r}")
    jobs = options.pop("jobs", None)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)):
        raise UsageError(f"jobs must be a whole number of workers, got {jobs!r}")
    compile_cache = options.pop("compile_cache", False)
    if not isinstance(compile_cache, bool):
        raise UsageError(f"compile_cache must be True or False, got {compile_cache!r}")
    aliases = {"framework": "frameworks", "dtype": "dtypes", "kind": "kinds", "shape": "shapes"}
    fields = {aliases.get(k, k): v for k, v in options.items()}
    if "shapes" in fields and fields["shapes"] and isinstance(fields["shapes"][0], int):
        fields["shapes"] = [fields["shapes"]]  # one shape given as a tuple of ints
    fields.update((k, _plain_number(v)) for k, v in fields.items() if k in NUMBER_RANGES)
    try:
        request = Request(ops=op, impl=impl, **fields)
    except TypeError:
        unknown = sorted(set(fields) - set(Request.__dataclass_fields__))
        raise TypeError(f"unknown option(s) {', '.join(unknown)}") from None
    if repro is None:
        return execute(request, strict=strict, jobs=jobs, compile_cache=compile_cache)
    return _execute_reproducing(request, Path(repro), call, strict, jobs, compile_cache)


def _call_text(op: Any, impl: Any, options: dict[str, Any]) -> str:
    """The call as the reproducers' index shows it."""
    name = impl if impl is None or isinstance(impl, str) else getattr(impl, "__qualname__", type(impl).__name__)
    args = [repr(op), repr(name), *(f"{k}={v!r}" for k, v in options.items())]
    return f"normcheck.check({', '.join(args)})"


def _execute_reproducing(
    request: Request, directory: Path, call: str, strict: bool, jobs: int | None, compile_cache: bool
) -> Report:
    """``execute``, then the reproducers of the run's failures written into ``directory``."""
    from normcheck.engine.jobs import check_shards, plan_request, run_plan
    from normcheck.engine.pool import Engine, can_send
    from normcheck.repro.write import directory_problem, write_reproducers

    problem = directory_problem(directory)
    if problem:
        raise UsageError(f"repro {directory}: {problem}")
    with Engine(jobs, inline=not can_send(request), compile_cache=compile_cache) as engine:
        plan = plan_request(engine, request)
        check_shards([plan])
        report = run_plan(engine, plan, strict=strict)
    write_reproducers([(plan, report.results)], directory, call)
    if report.interrupted:  # the caller's Ctrl-C, raised in the caller as execute does
        engine.restore_ctrl_c()
        raise KeyboardInterrupt
    return report


def _plain_number(value: Any) -> Any:
    """A NumPy scalar (np.float32(1e-5)) as the Python float it stands for; anything else as given,
    for the request's checks to accept or refuse (rtol=nan, eps=0, "1e-5" are usage errors)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | int | float):
        return float(value)
    return value


def assert_matches(op: str | list[str] | None = None, impl: Any = None, **options: Any) -> Report:
    """``check``, raising AssertionError with the mismatch report when any check fails or errors
    (or matches a known framework defect, with ``strict=True``). Returns the report otherwise."""
    report = check(op, impl, **options)
    if not report.ok:
        raise AssertionError(mismatch_report(report))
    return report


def mismatch_report(report: Report, limit: int = 20) -> str:
    """Plain text: the counts, then one line per failing check with its diagnosis."""
    bad = report.failing()
    c = report.counts
    lines = [
        f"normcheck: {len(bad)} of {len(report.results)} checks failed "
        f"({c['pass']} passed, {c['fail']} failed, {c['error']} errors, {c['known']} known, {c['skip']} skipped)"
    ]
    for r in bad[:limit]:
        d = r.as_dict()
        where = " ".join(str(d[k]) for k in ("op", "impl", "shape", "params", "dtype", "layout", "input"))
        lines.append(f"  {r.status.upper()} {where} {r.check}: {r.message}")
        if d.get("diagnosis"):
            lines.append(f"      diagnosis: {d['diagnosis']['summary']}")
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
