"""The config file as a pytest collector, its checks as items, and the engine that runs them.

Imported only when a run opts in (normcheck.pytest_plugin). The config file itself is the
collected node (``pyproject.toml::test_normcheck[<check>-<op>-<dtype>-<input kind>]``), so node
ids, ``-k``, ``--lf`` and xdist's scheduling work as for any test file. Items come from the
config alone (nothing is loaded to collect them), so every xdist worker collects the same ones.

Each item runs its slice of the check's matrix (every shape, variant, layout and call style of
one op, dtype and input kind) in normcheck's worker processes: one Engine per pytest process,
started at the first item and closed at the end of the session; each check is planned once
(its code loaded in a worker) and its slices run on that plan.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from normcheck.errors import UsageError
from normcheck.pytest_plugin.failure import counts_text, failure_text, passed_text, skip_reason

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr, TracebackStyle

    from normcheck.engine.pool import Engine
    from normcheck.engine.tasks import Plan
    from normcheck.verify.records import CheckResult
    from normcheck.verify.request import Request

ITEM = "test_normcheck"
MARKER = "normcheck"


@dataclass(frozen=True)
class Slice:
    """One item's part of the config: the check (1-based) and its op, dtype and input kind."""

    index: int
    slug: str
    op: str
    dtype: str
    kind: str

    @property
    def id(self) -> str:
        return f"{self.slug}-{self.op}-{self.dtype}-{self.kind}"


class NormcheckFailed(Exception):
    """An item's checks failed: the text is the whole report (no traceback is shown)."""


class NormcheckPlugin:
    """Registered by pytest_configure when the run opts in: collects the config file."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        self.config = config
        self.path = path.resolve()
        self.strict: bool = bool(config.getoption("normcheck_strict", False))
        self.jobs: int | None = config.getoption("normcheck_jobs", None)
        if self.jobs is not None and self.jobs < 1:
            raise pytest.UsageError(f"--normcheck-jobs must be at least 1, not {self.jobs}")
        self._runner: Runner | None = None
        config.addinivalue_line("markers", f"{MARKER}: a check of the project's normcheck config (normcheck plugin)")
        _collect_config_too(config, self.path)

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if file_path.name == self.path.name and file_path.resolve() == self.path:
            node = NormcheckFile.from_parent(parent, path=file_path)
            node.plugin = self
            return node
        return None

    def runner(self, checks: int) -> Runner:
        if self._runner is None:
            self._runner = Runner(self.path.parent, self.jobs or _default_jobs(checks))
        return self._runner

    def pytest_sessionfinish(self) -> None:
        self.close()

    def pytest_unconfigure(self) -> None:
        self.close()

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def _collect_config_too(config: pytest.Config, path: Path) -> None:
    """Put the config file among the paths pytest collects when the run's paths are its defaults
    (testpaths, or the invocation directory) and do not already hold it. Paths given on the
    command line are the user's choice: the config is collected only when among them."""
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        return
    base = config.invocation_params.dir
    for arg in config.args:
        given = (base / arg.split("::")[0]).resolve()
        if given == path or given in path.parents:
            return
    config.args.append(str(path))


def _default_jobs(checks: int) -> int:
    """One worker per check (a worker that ran a check's code serves only that check), at most the
    usable CPUs shared among xdist's workers."""
    from normcheck.engine.pool import default_jobs

    try:
        sharing = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        sharing = 1
    return max(1, min(checks, default_jobs() // sharing))


class NormcheckFile(pytest.File):
    """The config file: one item per check, op, dtype and input kind."""

    plugin: NormcheckPlugin
    requests: list[Request]

    def collect(self) -> Iterator[pytest.Item]:
        from normcheck.verify.config import load_config

        self.requests = load_config(self.path)
        lines = _check_lines(self.path)
        taken: set[str] = set()
        for index, request in enumerate(self.requests, 1):
            try:
                ops, dtypes, kinds = matrix(request)
            except UsageError as e:
                raise UsageError(f"{self.path}: {check_label(request, index)}: {e}") from None
            slug = _unique(slug_of(request, index), taken)
            for op in ops:
                for dtype in dtypes:
                    for kind in kinds:
                        s = Slice(index, slug, op, dtype, kind)
                        item = NormcheckItem.from_parent(self, name=f"{ITEM}[{s.id}]", slice=s, request=request)
                        item.line = lines[index - 1] if index <= len(lines) else None
                        yield item

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, UsageError):
            return f"normcheck: bad config: {excinfo.value}"
        return super().repr_failure(excinfo)  # (a collector's takes no style)


def _check_lines(path: Path) -> list[int]:
    """The 0-based line of each ``[[check]]`` (``[[tool.normcheck.check]]``) header, in order."""
    header = re.compile(r"^\s*\[\[\s*(tool\s*\.\s*normcheck\s*\.\s*)?check\s*\]\]")
    wanted = path.name == "pyproject.toml"
    text = path.read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(text) if (m := header.match(line)) and bool(m.group(1)) == wanted]


def matrix(request: Request) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(ops, dtypes, input kinds) of a check, from the config alone: nothing is loaded. Without
    ``dtypes`` in the config these are normcheck's defaults; an implementation checked in fewer
    (NumPy's in float64 and float32) skips the others' items. UsageError as verify would give."""
    from normcheck.names import ALL_OP_NAMES, OP_NAMES
    from normcheck.parsing import choose
    from normcheck.verify.plan import invalid_cases
    from normcheck.verify.request import items, options, validate

    validate(request)
    if request.impl is None:
        ops = choose(items(request.ops), ALL_OP_NAMES, "op", OP_NAMES)
    else:
        from normcheck.user import guess_op
        from normcheck.user.resolve import impl_label

        ops = choose(items(request.ops), ALL_OP_NAMES, "op", ())
        if not ops:
            name = impl_label(request.impl)[1]
            guessed = guess_op(name)
            if guessed is None:
                raise UsageError(f"cannot tell which op {name} implements; give op")
            ops = (guessed,)
    opts = options(request, ops)
    problems = invalid_cases(opts)
    if problems:
        raise UsageError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return opts.ops, opts.dtypes, opts.kinds


def check_label(request: Request, index: int) -> str:
    """The check as messages name it: check 'my gn', or check 2 for one without a name."""
    return f"check {index}" if request.name in ("", f"check {index}") else f"check {request.name!r}"


def slug_of(request: Request, index: int) -> str:
    """The check's part of an item id: its name, else its implementation's name, else its
    frameworks; characters other than letters, digits, ``_``, ``.`` and ``+`` become ``_``."""
    if request.name and request.name != f"check {index}":
        text = request.name
    elif isinstance(request.impl, str):
        text = request.impl.rpartition(":")[2]
    elif request.frameworks:
        text = request.frameworks if isinstance(request.frameworks, str) else "+".join(request.frameworks)
    else:
        text = f"check_{index}"
    return re.sub(r"[^A-Za-z0-9_.+]+", "_", text).strip("_") or f"check_{index}"


def _unique(slug: str, taken: set[str]) -> str:
    """``slug``, or ``slug_2``, ``slug_3``... for a later check with the same one (config order)."""
    out, n = slug, 1
    while out in taken:
        n += 1
        out = f"{slug}_{n}"
    taken.add(out)
    return out


class NormcheckItem(pytest.Item):
    """One slice of one check, run through normcheck's engine."""

    def __init__(self, *, slice: Slice, request: Request, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slice = slice
        self.request = request
        self.line: int | None = None  # of the check's table in the config, 0-based
        self.add_marker(MARKER)
        if self.config.pluginmanager.hasplugin("xdist"):  # --dist loadgroup: a check's items on one worker
            self.add_marker(pytest.mark.xdist_group(slice.slug))
        self.extra_keyword_matches.update({slice.slug, slice.op, slice.dtype, slice.kind})

    @property
    def file(self) -> NormcheckFile:
        assert isinstance(self.parent, NormcheckFile)
        return self.parent

    @property
    def title(self) -> str:
        s, impl = self.slice, self.request.impl
        check = check_label(self.request, s.index) + (f" ({impl})" if isinstance(impl, str) else "")
        return f"{check}: {s.op}, {s.dtype}, input {s.kind}"

    def runtest(self) -> None:
        from normcheck.verify.records import ERROR, FAIL, KNOWN, SKIP

        plugin = self.file.plugin
        try:
            rows = plugin.runner(len(self.file.requests)).rows(self.slice, self.request)
        except UsageError as e:
            raise NormcheckFailed(f"normcheck could not run {self.title}:\n{e}") from None
        if isinstance(rows, str):
            _skip(rows)
        self.user_properties.append(("normcheck", counts_text(rows)))  # a property in --junitxml
        failing = (FAIL, ERROR, KNOWN) if plugin.strict else (FAIL, ERROR)
        if any(r.status in failing for r in rows):
            raise NormcheckFailed(failure_text(self.title, rows, failing, _shown_path(self.path)))
        if all(r.status == SKIP for r in rows):
            _skip(skip_reason(rows))
        self.add_report_section("call", "normcheck", passed_text(self.title, rows))

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, NormcheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # where the check is in the config; the failure's heading is the item's name, as a test's
        return self.path, self.line, self.name


def _skip(reason: str) -> NoReturn:
    """Skip the running item, reported at its check in the config (not at this line)."""
    raise pytest.skip.Exception(reason, _use_item_location=True)


def _shown_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


class Runner:
    """The engine of one pytest process (a session, or an xdist worker) and what it has run."""

    def __init__(self, directory: Path, jobs: int) -> None:
        self.directory = directory  # the config's folder: its paths are relative to it
        self.jobs = jobs
        self.engine: Engine | None = None
        self.plans: dict[int, Plan | UsageError] = {}
        self.done: dict[Slice, list[CheckResult] | None] = {}

    def _engine(self) -> Engine:
        if self.engine is None:
            from normcheck.engine.pool import Engine

            self.engine = Engine(self.jobs)
        return self.engine

    def plan(self, s: Slice, request: Request) -> Plan:
        """The check's plan, made once (its code loaded in a worker); its UsageError every time."""
        if s.index not in self.plans:
            from normcheck.engine.jobs import plan_request

            try:
                with contextlib.chdir(self.directory):
                    self.plans[s.index] = plan_request(self._engine(), request)
            except UsageError as e:
                self.plans[s.index] = e
        got = self.plans[s.index]
        if isinstance(got, UsageError):
            raise got
        return got

    def rows(self, s: Slice, request: Request) -> list[CheckResult] | str:
        """The slice's rows, diagnoses reconciled across dtypes as verify does; a string (the
        reason to skip) when the plan holds no case of the slice."""
        from normcheck.diagnosis.consistency import reconcile
        from normcheck.diagnosis.hypotheses import FORMULA
        from normcheck.dtypes import HALF

        plan = self.plan(s, request)
        unloaded = [r for r in plan.load_rows if r.case.op in (s.op, "-")]
        if unloaded:
            return unloaded
        mine = self._run(plan, s)
        if mine is None:
            planned = sorted({u.dtype for u in plan.units if u.op == s.op})
            return (
                f"normcheck: no {s.dtype} case with input {s.kind} is planned for this check "
                f"(its {s.op} cases are checked in {', '.join(planned) or 'no dtype'}); "
                "name the dtypes in the config to choose them"
            )
        support: list[CheckResult] = []
        if s.dtype in HALF and any(r.diagnosis is not None and r.diagnosis.family == FORMULA for r in mine):
            # a formula cause on a half-precision row is named only when the same case's
            # float32/float64 rows confirm it: those rows, run here too where not yet run
            for dtype in dict.fromkeys(u.dtype for u in plan.units if u.op == s.op and u.dtype not in HALF):
                support += self._run(plan, replace(s, dtype=dtype)) or []
        return reconcile([*support, *mine])[len(support) :]

    def _run(self, plan: Plan, s: Slice) -> list[CheckResult] | None:
        """The slice's rows as judged (before reconciling), run once; None when none is planned."""
        if s not in self.done:
            units = [u for u in plan.units if (u.op, u.dtype, u.kind) == (s.op, s.dtype, s.kind)]
            if not units:
                self.done[s] = None
            else:
                engine = self._engine()
                with contextlib.chdir(self.directory):
                    result = engine.run(replace(plan, units=units, load_rows=[]))
                if result.interrupted:  # the Ctrl-C reaches pytest, after the engine has let go of it
                    engine.restore_ctrl_c()
                    raise KeyboardInterrupt
                self.done[s] = result.results
        return self.done[s]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
