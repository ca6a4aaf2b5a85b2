"""A run's reproducers written into a directory: for each distinct failure a script and an .npz,
then the index. Nothing here imports a framework or the user's code: each framework's repro
module writes its part of a script as text."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from normcheck import frameworks as registry
from normcheck.engine.tasks import Plan
from normcheck.repro.call import ARRAY_NAMES, ReproCall, Snippet, UserCode, extensions
from normcheck.repro.index import INDEX, Reproducer, index_text
from normcheck.repro.inputs import repro_arrays
from normcheck.repro.script import Description, render
from normcheck.repro.select import Failure, distinct_failures, file_stem
from normcheck.repro.user_code import Loader, loader
from normcheck.verify.records import CheckResult


def write_reproducers(
    runs: Sequence[tuple[Plan, Sequence[CheckResult]]], directory: Path, command: str, project: Path | None = None
) -> list[Reproducer]:
    """Write the reproducers of ``runs`` (each plan with the rows it produced) into ``directory``
    (created if need be) and its index; ``command`` is what produced the run, ``project`` the
    folder a user's code was loaded from (the current one by default)."""
    project = Path.cwd() if project is None else project
    directory.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    records = []
    for failure in distinct_failures(runs):
        code = _code(failure, directory, project)
        if isinstance(code, str):
            records.append(Reproducer(failure.row, failure.rows, failure.cause, None, code))
            continue
        stem = _unique(file_stem(failure.row.case, failure.row.check, failure.slug), taken)
        _write(failure, directory, stem, command, *code)
        records.append(Reproducer(failure.row, failure.rows, failure.cause, f"{stem}.py"))
    (directory / INDEX).write_text(index_text(records, command))
    return records


def _write(failure: Failure, directory: Path, stem: str, command: str, snippet: Snippet, load: Loader | None) -> None:
    row = failure.row
    if row.tolerance is None:  # _code refuses such a row
        raise ValueError("a row without a tolerance has no reproducer")
    problem = failure.unit.problem(failure.plan.opts.seed)
    arrays = repro_arrays(problem, row.check, row.tolerance, failure.plan.opts.tolerance)
    inputs = tuple(name for name in ARRAY_NAMES if name in arrays)
    text = render(Description(row, failure.rows, failure.cause, command, snippet.needs, inputs), stem, snippet, load)
    (directory / f"{stem}.py").write_text(text)
    with open(directory / f"{stem}.npz", "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle


def _unique(stem: str, taken: set[str]) -> str:
    name, n = stem, 1
    while name.lower() in taken:  # case-insensitive file systems too
        n += 1
        name = f"{stem}_{n}"
    taken.add(name.lower())
    return name


def repro_call(failure: Failure) -> tuple[str, ReproCall]:
    """(the registry entry whose repro module writes the code, the call of the failing row)."""
    case, settings, facts = failure.row.case, failure.unit.settings, failure.facts
    user = None
    framework = case.framework
    if facts.form is not None:
        user = UserCode(facts.form, facts.omit_defaults)
        framework = registry.FORMS[facts.form].framework
    if case.op == "-" or case.dtype == "-" or case.kind == "-":
        raise ValueError("a row of code that could not be loaded has no case to reproduce")
    call = ReproCall(
        impl=case.impl,
        op=case.op,
        shape=case.shape,
        params=case.params,
        dtype=case.dtype,
        layout=case.layout,
        device=case.device,
        eps=settings.eps,
        momentum=settings.momentum,
        framework_momentum=settings.framework_momentum,
        user=user,
    )
    return framework, call


def _code(failure: Failure, directory: Path, project: Path) -> tuple[Snippet, Loader | None] | str:
    """The framework's snippet and the user code's loader for ``failure``, or why there are none."""
    row = failure.row
    if row.against is not None:
        return f"compared directly with {row.against}, not with the reference; a reproducer compares with the reference"
    if row.comparison is None or row.tolerance is None:
        return "the row has no error to reproduce"
    framework, call = repro_call(failure)
    if registry.REGISTRY[framework].repro is None:
        return f"{framework} has no reproducers"
    module = registry.repro_module(framework)
    uncovered = uncovered_extensions(call, getattr(module, "COVERS", frozenset()))
    if uncovered:
        who = f"{call.user.form} user code" if call.user is not None else call.impl
        return f"the {framework} reproducers do not cover {' or '.join(uncovered)} yet ({who})"
    snippet = module.snippet(call)
    if isinstance(snippet, str):
        return snippet
    if call.user is None:
        return snippet, None
    request = failure.plan.request
    load = loader(request.impl, request.backward, directory, project)
    return (snippet, load) if not isinstance(load, str) else load


def uncovered_extensions(call: ReproCall, covers: frozenset[str]) -> list[str]:
    """What ``call`` computes beyond the plain ops (repro.call.extensions) that a repro module
    covering ``covers`` (its ``COVERS``: the extension names whose calls it writes) does not
    write, in words; a module without ``COVERS`` writes the plain ops only."""
    return [words for name, words in extensions(call).items() if name not in covers]


def directory_problem(directory: Path) -> str | None:
    """Why reproducers cannot be written into ``directory`` (created if need be), or None."""
    if directory.exists():
        if not directory.is_dir():
            return "exists and is not a folder"
        return None if os.access(directory, os.W_OK | os.X_OK) else "is not writable"
    parent = directory.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot be created: {parent} is not writable"
