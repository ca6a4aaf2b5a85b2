"""verify requests run by the engine: parts planned in workers, cases run in workers, judged
here, summarized into a Report."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from normcheck.engine.pool import Engine, can_send
from normcheck.engine.tasks import USER_PART, Plan
from normcheck.errors import UsageError
from normcheck.names import OP_NAMES
from normcheck.parsing import split_list
from normcheck.verify.plan import Options
from normcheck.verify.records import summarize
from normcheck.verify.request import Report, Request, items, named, options, validate


def parts(request: Request) -> tuple[list[str], Options]:
    """The request checked here (nothing loaded), as the parts the engine plans, and options that
    stand in where no part could be planned."""
    names, _ = validate(request)
    ops = split_list(items(request.ops))
    if request.impl is not None and not ops:
        from normcheck.user import guess_op
        from normcheck.user.resolve import impl_label

        guessed = guess_op(impl_label(request.impl)[1])
        ops = [guessed] if guessed else []
    opts = options(request, tuple(o for o in ops if o in OP_NAMES))
    return ([USER_PART] if request.impl is not None else list(names)), opts


def plan_request(engine: Engine, request: Request) -> Plan:
    """Validate here, then load and plan in the engine's workers: an engine Plan."""
    names, fallback = parts(request)
    try:
        return engine.plan(request, names, fallback)
    except UsageError as e:
        raise named(request, e) from None


def run_plan(engine: Engine, plan: Plan, progress: Callable[[int], None] | None = None, strict: bool = False) -> Report:
    start = time.perf_counter()
    outcome = engine.run(plan, progress)
    elapsed = time.perf_counter() - start
    from normcheck.diagnosis.consistency import reconcile

    results = reconcile(outcome.results)
    summary: dict[str, Any] = {
        **summarize(results),
        "cases": plan.total,
        "seconds": round(elapsed, 2),
        "translations": plan.translations,
    }
    if plan.against is not None:
        summary["against"] = plan.against.name
    if plan.opts.shard is not None:
        summary["shard"] = "{}/{}".format(*plan.opts.shard)
    if plan.request.name:
        summary["name"] = plan.request.name
    if outcome.interrupted:
        summary["interrupted"] = True
    return Report(results, summary, strict, outcome.interrupted)


def execute(
    request: Request,
    progress: Callable[[int], None] | None = None,
    strict: bool = False,
    jobs: int | None = None,
    compile_cache: bool = False,
) -> Report:
    """Plan and run one request in worker processes (in this process when the implementation is an
    object that cannot be sent to one, such as a lambda: then without isolation)."""
    with Engine(jobs, inline=not can_send(request), compile_cache=compile_cache) as engine:
        plan = plan_request(engine, request)
        check_shards([plan])
        report = run_plan(engine, plan, progress, strict)
    if report.interrupted:  # the caller's Ctrl-C: raise it in the caller, after the workers are gone
        engine.restore_ctrl_c()
        raise KeyboardInterrupt
    return report


def check_shards(plans: list[Plan]) -> None:
    """UsageError when --shard leaves nothing to run in the whole run (one small check of a
    config may rightly hold no case of a slice)."""
    sharded = [(p, p.opts.shard) for p in plans if p.opts.shard is not None]
    if sharded and not any(p.units for p, _ in sharded):
        k, n = sharded[0][1]
        total = sum(p.unsharded for p, _ in sharded)
        raise UsageError(f"shard {k}/{n} holds no cases: the matrix has {total}, so N may be at most {max(total, 1)}")
