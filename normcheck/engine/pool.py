"""verify's engine on the parent's side: plan in workers, run cases in workers, judge here.

Cases are grouped per framework configuration (part, framework, op, shape, params, dtype), so a
worker compiles a configuration once and reuses it for every input kind; an idle worker takes
the next group of a part it has loaded before one that would make it import another. Records
are kept by their place in the plan and returned in plan order, so the report is the same
whatever the number of workers.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from pathlib import Path

from normcheck.bench.threads import THREAD_VARIABLES, XLA_ONE_THREAD, available_cpus
from normcheck.engine.ctrl_c import SecondCtrlC
from normcheck.engine.process import InlineWorker, Worker, WorkerDied, WorkerTimeout, make_worker
from normcheck.engine.tasks import USER_PART, PartPlan, Plan, PlannedUnit
from normcheck.errors import UsageError
from normcheck.frameworks.base import FrameworkFacts
from normcheck.problem import Problem
from normcheck.verify.crosscheck import Baseline
from normcheck.verify.judge import Truth, judge_outcome
from normcheck.verify.plan import Options, shard_cases
from normcheck.verify.records import ERROR, RUN, SKIP, Case, CheckResult, load_error_row
from normcheck.verify.request import Request, refuse_unplanned
from normcheck.verify.run import Outcome

MAX_TIMEOUTS = 2  # after this many cases of one implementation time out, its other cases are not run
MAX_DEATHS = 3  # likewise for cases that crash their worker
SPAWN_MIN_CASES = 400  # a further worker starts only while this many cases wait: starting one costs seconds
LOAD_TIMEOUT = 120.0  # seconds a worker may take to import the frameworks and the user's code
# every verify worker alike (one thread per framework), so records do not depend on --jobs
VERIFY_ENV = {**dict.fromkeys(THREAD_VARIABLES, "1"), "XLA_FLAGS": XLA_ONE_THREAD}


def cache_dir() -> Path:
    """normcheck's folder in the user's cache dir: $NORMCHECK_CACHE_DIR, else
    $XDG_CACHE_HOME/normcheck, else ~/.cache/normcheck."""
    if os.environ.get("NORMCHECK_CACHE_DIR"):
        return Path(os.environ["NORMCHECK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "normcheck"


def compile_cache_env() -> dict[str, str]:
    """JAX's persistent compilation cache in cache_dir()/jax, every compiled function kept, so a
    second run loads what the first compiled instead of compiling it again."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir() / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def can_send(request: Request) -> bool:
    """Whether a worker can receive ``request``: an implementation object goes by its importable
    name, so a lambda or a function defined inside another cannot."""
    import importlib.util
    import pickle

    for obj in (getattr(request, "impl", None), getattr(request, "backward", None)):
        if obj is None or isinstance(obj, str):
            continue
        module = getattr(obj, "__module__", None)
        if module == "__main__":
            return False  # a worker's __main__ is not the caller's script
        try:  # a module loaded from a file by path (pytest's importlib mode) has no name to import by
            if module is None or importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):
            return False
    try:
        pickle.dumps(request)
    except Exception:
        return False
    return True


def default_jobs() -> int:
    return max(1, len(available_cpus()))


@dataclass
class Task:
    part: str
    req_id: str
    request: Request
    pending: deque[tuple[int, Case]]  # (unit id, case), in the order the worker runs them

    def items(self, plan: Plan, problems: dict[int, Problem]) -> list[tuple[int, tuple, Problem, list[Case]]]:
        out: dict[int, list[Case]] = {}
        for u, case in self.pending:
            out.setdefault(u, []).append(case)
        return [(u, plan.units[u].key, problems[u], cases) for u, cases in out.items()]


@dataclass
class _Slot:
    worker: Worker | InlineWorker
    task: Task | None = None
    loading: bool = False
    deadline: float = float("inf")
    user_of: str | None = None  # the request whose user code it has run


@dataclass
class RunResult:
    results: list[CheckResult]
    interrupted: bool = False


class Engine:
    """Worker processes for one or more verify requests; use as a context manager."""

    def __init__(
        self, jobs: int | None = None, verbose: bool = False, inline: bool = False, compile_cache: bool = False
    ) -> None:
        if jobs is not None and jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {jobs}")
        self.jobs = jobs or default_jobs()
        self.verbose = verbose
        self.inline = inline  # run in this process (an implementation object no worker can load)
        self.env = {**VERIFY_ENV, **(compile_cache_env() if compile_cache else {})}
        self.slots: list[_Slot] = []
        self._last_id = ""
        self._ids: list[str] = []
        self._ctrl_c = SecondCtrlC()

    def _new_id(self) -> str:
        """An id no other request of any engine shares (an inline worker's cache outlives engines)."""
        import uuid

        self._last_id = uuid.uuid4().hex
        self._ids.append(self._last_id)
        return self._last_id

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask every idle worker to leave at once, give them a moment together, then kill all."""
        import contextlib

        for slot in self.slots:
            if slot.task is None:
                with contextlib.suppress(WorkerDied):
                    slot.worker.send(("exit", None))
        deadline = time.monotonic() + 1.0
        leaving = [s for s in self.slots if s.task is None and not s.worker.inline]
        while any(s.worker.alive() for s in leaving) and time.monotonic() < deadline:
            time.sleep(0.01)
        for slot in self.slots:
            slot.worker.kill()
        self.slots = []
        if self.inline:
            from normcheck.engine.tasks import forget

            forget(self._ids)

    def ignore_ctrl_c(self) -> None:
        """After a first Ctrl-C: a second one must not cut the writing of the partial report.
        ``restore_ctrl_c`` undoes it (the Python API, which then raises KeyboardInterrupt)."""
        self._ctrl_c.ignore()

    def restore_ctrl_c(self) -> None:
        self._ctrl_c.restore()

    # -- workers ---------------------------------------------------------------------------

    def _idle_slot(self, part: str, req_id: str, waiting: int | None = None) -> _Slot | None:
        """An idle worker for ``part``: one that has it loaded, else a new one while fewer than
        ``jobs`` run (when ``waiting`` cases are known, only if enough wait to be worth its
        start-up), else any idle one; None when the work must wait for a busy worker. A worker
        that has run user code serves only that request's user part (the code may have changed
        its process); a dead one is replaced."""
        for dead in [s for s in self.slots if s.task is None and not s.worker.alive()]:
            self._replace(dead)
        idle = [s for s in self.slots if s.task is None and self._serves(s, part, req_id)]
        match = next((s for s in idle if part in s.worker.tags), None)
        if match is not None:
            return match
        busy = any(s.task is not None for s in self.slots)
        if not idle and not busy and len(self.slots) >= self.jobs:
            self._retire_one()
        worth = waiting is None or not self.slots or waiting >= SPAWN_MIN_CASES
        if len(self.slots) < self.jobs and (worth or (not idle and not busy)):
            slot = _Slot(make_worker(env=self.env, verbose=self.verbose, inline=self.inline))
            self.slots.append(slot)
            return slot
        return idle[0] if idle else None

    @staticmethod
    def _serves(slot: _Slot, part: str, req_id: str) -> bool:
        return slot.user_of is None or (part == USER_PART and slot.user_of == req_id)

    def _retire_one(self) -> None:
        """Stop an idle worker that ran another request's user code, to make room."""
        for s in self.slots:
            if s.task is None and s.user_of is not None:
                self._replace(s)
                return

    def _replace(self, slot: _Slot) -> None:
        slot.worker.kill()
        self.slots.remove(slot)

    # -- planning ----------------------------------------------------------------------------

    def plan(self, request: Request, parts: list[str], fallback_opts: Options) -> Plan:
        """Plan ``request`` part by part, in parallel workers; UsageError for what the user must fix."""
        req_id = self._new_id()
        done: dict[str, PartPlan | str] = {}
        waiting: dict[int, tuple[_Slot, str, float]] = {}
        retries: dict[str, int] = {}
        todo = list(parts)
        try:
            while todo or waiting:
                while todo:
                    slot = self._idle_slot(todo[0], req_id)
                    if slot is None:
                        break
                    part = todo.pop(0)
                    slot.task = Task(part, req_id, request, deque())
                    if part == USER_PART:
                        slot.user_of = req_id
                    try:
                        slot.worker.send(("verify.plan", (req_id, request, part)))
                    except WorkerDied as e:
                        slot.task = None
                        self._replace(slot)
                        retries[part] = retries.get(part, 0) + 1
                        if retries[part] > 1:
                            done[part] = f"the worker died ({e.how})"
                        else:
                            todo.insert(0, part)
                        continue
                    waiting[id(slot)] = (slot, part, time.monotonic() + LOAD_TIMEOUT)
                if waiting:
                    self._collect_plans(waiting, done)
        except BaseException:
            for slot, _, _ in waiting.values():
                self._replace(slot)
            raise
        return _merge(request, req_id, parts, done, fallback_opts)

    def _collect_plans(self, waiting: dict[int, tuple[_Slot, str, float]], done: dict[str, PartPlan | str]) -> None:
        now = time.monotonic()
        soonest = min(d for _, _, d in waiting.values())
        ready = _ready([s for s, _, _ in waiting.values()], max(0.0, soonest - now))
        for key, (slot, part, deadline) in list(waiting.items()):
            if slot not in ready and isinstance(slot.worker, Worker) and slot.worker.from_child.poll(0):
                ready.append(slot)  # it answered while others were being read
            if slot not in ready:
                how = slot.worker.death()
                if how is not None:
                    done[part] = f"the worker died while loading ({how})"
                    del waiting[key]
                    self._replace(slot)
                elif time.monotonic() >= deadline:
                    done[part] = f"loading did not finish within {LOAD_TIMEOUT:g} s"
                    del waiting[key]
                    self._replace(slot)
                continue
            try:
                kind, payload = slot.worker.receive(0)
            except (WorkerDied, WorkerTimeout) as e:
                how = e.how if isinstance(e, WorkerDied) else "it stopped answering"
                done[part] = f"the worker died while loading ({how})"
                del waiting[key]
                self._replace(slot)
                continue
            if kind == "plan":
                done[part] = payload
                slot.worker.tags.add(part)
            elif kind == "done":
                slot.task = None
                del waiting[key]
            elif kind == "usage":
                slot.task = None
                del waiting[key]
                raise UsageError(payload)
            elif kind == "fail":
                done[part] = f"loading failed: {payload}"
                slot.task = None
                del waiting[key]

    # -- running -----------------------------------------------------------------------------

    def run(self, plan: Plan, progress: Callable[[int], None] | None = None) -> RunResult:
        return _Run(self, plan, progress).go()


def _ready(slots: list[_Slot], timeout: float | None) -> list[_Slot]:
    """The slots with a message waiting, after up to ``timeout`` seconds."""
    now = [s for s in slots if s.worker.ready()]
    piped = {s.worker.from_child: s for s in slots if isinstance(s.worker, Worker)}
    if not piped:
        return now
    got = wait(list(piped), 0 if now else timeout)  # a subset of what it was given
    return now + [s for c, s in piped.items() if c in got]


def _merge(
    request: Request, req_id: str, parts: list[str], done: dict[str, PartPlan | str], fallback_opts: Options
) -> Plan:
    frameworks: list[FrameworkFacts] = []
    units: list[PlannedUnit] = []
    load_rows: list[CheckResult] = []
    notes: list[str] = []
    against: FrameworkFacts | None = None
    opts: Options | None = None
    for part in parts:
        got = done.get(part, "it was not planned")
        if isinstance(got, str):
            label = request.impl if part == USER_PART and isinstance(request.impl, str) else part
            for op in fallback_opts.ops or ("-",):
                load_rows.append(load_error_row(op, label, f"{label}: {got}", framework=part))
            continue
        offset = len(frameworks)
        frameworks += got.frameworks
        for u in got.units:  # order: (op, case, framework) with the framework's index in the merged plan
            fw = u.framework + offset
            units.append(replace(u, framework=fw, order=(u.order[0], u.order[1], fw)))
        load_rows += got.load_rows
        notes += got.translations
        against = against or got.against
        opts = opts or got.opts
    units.sort(key=lambda u: u.order)  # stable: within a framework, its part's own order
    opts = replace(opts or fallback_opts, shard=fallback_opts.shard)  # parts are planned unsharded
    planned: set[str] = {u.op for u in units}
    refuse_unplanned(opts.ops, planned, [f.name for f in frameworks], bool(load_rows), opts.quant is not None)
    unsharded = sum(len(u.cases) for u in units)
    if opts.shard is not None:
        units = shard_cases(units, opts.shard)
    return Plan(request, req_id, opts, frameworks, units, load_rows, list(dict.fromkeys(notes)), against, unsharded)


class _Run:
    """One plan through the engine's workers."""

    def __init__(self, engine: Engine, plan: Plan, progress: Callable[[int], None] | None) -> None:
        self.engine, self.plan, self.progress = engine, plan, progress
        self.req_id = plan.req_id
        self.rows: dict[tuple[int, Case], list[CheckResult]] = {}
        self.problems: dict[int, Problem] = {}
        self.truths: dict[int, Truth] = {}
        self.left: dict[int, int] = {}
        self.baselines: dict[int, Baseline | str] = {}
        self.timeouts: dict[tuple[str, str], int] = {}
        self.deaths: dict[tuple[str, str], int] = {}
        self.queue: deque[Task] = deque()

    def go(self) -> RunResult:
        interrupted = False
        if self.progress and self.plan.load_rows:
            self.progress(len(self.plan.load_rows))
        try:
            self._queue_groups()
            while self.queue or any(s.task is not None for s in self.engine.slots):
                self._dispatch()
                self._wait()
        except KeyboardInterrupt:
            interrupted = True
            self.engine.ignore_ctrl_c()
            for slot in list(self.engine.slots):
                if slot.task is not None:
                    self.engine._replace(slot)
        return RunResult(self._in_order(interrupted), interrupted)

    def _in_order(self, interrupted: bool) -> list[CheckResult]:
        """Every planned case's rows in plan order. A case without rows after a whole run is an
        error row (never silently left out); after Ctrl-C it is simply not in the report."""
        out = list(self.plan.load_rows)
        for u, unit in enumerate(self.plan.units):
            for case in unit.cases:
                rows = self.rows.get((u, case))
                if rows is None and not interrupted:
                    rows = [CheckResult(case, RUN, ERROR, message="normcheck lost this case: no worker reported it")]
                out += rows or []
        return out

    def _queue_groups(self) -> None:
        groups: dict[tuple, list[tuple[int, Case]]] = {}
        for u, unit in enumerate(self.plan.units):
            self.left[u] = len(unit.cases)
            unheld = unit.skip or (
                self._truth(u).unheld if unit.params.running_stats and unit.params.mode == "eval" else None
            )
            if unheld:
                for case in unit.cases:
                    self._record(u, case, [CheckResult(case, RUN, SKIP, message=unheld)])
                continue
            key = (unit.part, unit.framework, unit.op, unit.shape, unit.params, unit.dtype)
            groups.setdefault(key, []).extend((u, c) for c in unit.cases)
        request = self.plan.request
        for (part, *_), pending in groups.items():
            self.queue.append(Task(part, self.req_id, request, deque(pending)))

    def _problem(self, u: int) -> Problem:
        if u not in self.problems:
            self.problems[u] = self.plan.units[u].problem(self.plan.opts.seed)
        return self.problems[u]

    def _truth(self, u: int) -> Truth:
        if u not in self.truths:
            self.truths[u] = Truth.of(self._problem(u))
        return self.truths[u]

    def _record(self, u: int, case: Case, rows: list[CheckResult]) -> None:
        self.rows[(u, case)] = rows
        self.left[u] -= 1
        if self.left[u] <= 0:  # every case of the unit judged: its inputs are no longer needed
            self.problems.pop(u, None)
            self.truths.pop(u, None)
            self.baselines.pop(u, None)
        if self.progress:
            self.progress(1)

    def _error(self, u: int, case: Case, message: str) -> None:
        self._record(u, case, [CheckResult(case, RUN, ERROR, message=message)])

    def _barred(self, case: Case) -> str | None:
        who = (case.framework, case.impl)
        if self.timeouts.get(who, 0) >= MAX_TIMEOUTS:
            return f"not run: {MAX_TIMEOUTS} earlier cases timed out"
        if self.deaths.get(who, 0) >= MAX_DEATHS:
            return f"not run: {MAX_DEATHS} earlier cases crashed their worker"
        return None

    def _next_task(self, slot: _Slot) -> Task | None:
        """The first queued task of a part the worker has loaded, else the first it may serve."""
        usable = [t for t in self.queue if Engine._serves(slot, t.part, self.req_id)]
        task = next((t for t in usable if t.part in slot.worker.tags), usable[0] if usable else None)
        if task is not None:
            self.queue.remove(task)
        return task

    def _dispatch(self) -> None:
        while self.queue:
            slot = self.engine._idle_slot(self.queue[0].part, self.req_id, sum(len(t.pending) for t in self.queue))
            if slot is None:
                return
            task = self._next_task(slot)
            if task is None:
                return
            kept: deque[tuple[int, Case]] = deque()
            for u, case in task.pending:
                reason = self._barred(case)
                if reason:
                    self._error(u, case, reason)
                else:
                    kept.append((u, case))
            if not kept:
                continue
            task.pending = kept
            items = task.items(self.plan, {u: self._problem(u) for u, _ in kept})
            try:
                slot.worker.send(("verify.run", (task.req_id, task.request, task.part, items)))
            except WorkerDied:
                self.engine._replace(slot)
                self.queue.appendleft(task)
                continue
            slot.task, slot.loading = task, True
            if task.part == USER_PART:
                slot.user_of = self.req_id
            slot.deadline = time.monotonic() + max(LOAD_TIMEOUT, self._case_timeout())

    def _case_timeout(self) -> float:
        t = self.plan.opts.timeout
        return float("inf") if t is None else t

    def _wait(self) -> None:
        busy = [s for s in self.engine.slots if s.task is not None]
        if not busy:
            return
        soonest = min(s.deadline for s in busy)
        # at most a second: a worker whose pipe a forked child keeps open ends without an EOF
        timeout = min(1.0, max(0.0, soonest - time.monotonic()))
        ready = _ready(busy, timeout)
        for slot in busy:
            if slot in ready or (isinstance(slot.worker, Worker) and slot.worker.from_child.poll(0)):
                self._receive(slot)
                continue
            how = slot.worker.death()
            if how is not None:
                self._lost(slot, f"the worker died: {how}", death=True)
            elif time.monotonic() >= slot.deadline:
                self._overran(slot)

    def _receive(self, slot: _Slot) -> None:
        task = slot.task
        assert task is not None
        try:
            kind, payload = slot.worker.receive(0)
        except WorkerDied as e:
            self._lost(slot, f"the worker died: {e.how}", death=True)
            return
        except WorkerTimeout:
            self._lost(slot, "the worker stopped answering", death=True)
            return
        slot.deadline = time.monotonic() + self._case_timeout()
        if kind == "ready":
            slot.loading = False
            slot.worker.tags.add(task.part)
        elif kind == "baseline":
            self.baselines[payload[0]] = payload[1]
        elif kind == "case":
            u, case, outcome = payload
            if not task.pending or task.pending[0] != (u, case):  # out of order: trust it no further
                self._lost(slot, "the worker answered for a case it was not running", death=True)
                return
            task.pending.popleft()
            self._judge(u, case, outcome)
        elif kind == "done":
            for u, case in task.pending:
                self._error(u, case, "the worker finished without running this case")
            slot.task = None
            slot.deadline = float("inf")
        else:  # "usage" or "fail": the worker could not run the task at all
            for u, case in task.pending:
                self._error(u, case, f"could not run: {payload}")
            slot.task = None
            slot.deadline = float("inf")

    def _judge(self, u: int, case: Case, outcome: Outcome) -> None:
        unit: PlannedUnit = self.plan.units[u]
        framework = self.plan.frameworks[unit.framework]
        against = self.plan.against
        baseline = None
        if outcome.out is not None and against is not None and framework.name != against.name:
            baseline = self.baselines.get(u, f"{against.name}: no baseline output")
        try:
            rows = judge_outcome(case, self._problem(u), self._truth(u), outcome, self.plan.opts, framework, baseline)
        except MemoryError:
            rows = [CheckResult(case, RUN, ERROR, message="normcheck ran out of memory judging this case")]
        self._record(u, case, rows)

    def _overran(self, slot: _Slot) -> None:
        task = slot.task
        assert task is not None
        if slot.loading:
            self._lost(slot, f"loading did not finish within {LOAD_TIMEOUT:g} s", death=False, all_pending=True)
            return
        if task.pending:
            case = task.pending[0][1]
            who = (case.framework, case.impl)
            self.timeouts[who] = self.timeouts.get(who, 0) + 1
        self._lost(
            slot,
            f"timed out after {self._case_timeout():g} s (the limit is --timeout); the worker was stopped",
            death=False,
        )

    def _lost(self, slot: _Slot, how: str, death: bool, all_pending: bool = False) -> None:
        """The slot's worker is gone: the case it was running gets ``how``, the rest run elsewhere."""
        task = slot.task
        assert task is not None
        self.engine._replace(slot)
        if slot.loading and death:
            all_pending = True
            how = how.replace("the worker died", "the worker died while loading")
        if all_pending:
            for u, case in task.pending:
                self._error(u, case, how)
            return
        if task.pending:
            u, case = task.pending.popleft()
            if death:
                who = (case.framework, case.impl)
                self.deaths[who] = self.deaths.get(who, 0) + 1
            self._error(u, case, f"{how}, while running this case" if death else how)
        if task.pending:
            self.queue.appendleft(task)
