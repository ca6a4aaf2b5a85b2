"""GitHub Actions: workflow commands that annotate what failed, then one plain summary line; and
the Markdown job summary appended to the file GITHUB_STEP_SUMMARY names.

The syntax is GitHub's "Workflow commands for GitHub Actions"::

    ::error file={path},line={line},title={title}::{message}

Message data escape ``%`` as ``%25``, CR as ``%0D`` and LF as ``%0A`` (so a message spans lines and
nothing in it can start another command); property values (file, title) escape ``:`` as ``%3A``
and ``,`` as ``%2C`` as well. GitHub shows at most 10 annotations of each kind (error, warning,
notice) per step and 50 per job, so rows are grouped: one annotation per implementation, op and
cause (a named diagnosis, a known defect; a failing check when the cause is unknown; errors per
check), with the count and the worst row's numbers. Past ``limit`` groups of one kind, the last
annotation of that kind lists the rest.

A user implementation's annotation points at its ``def``/``class`` line (found with ``ast``, see
source_location); a built-in framework's carries no file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normcheck.report.source_location import display_path, locate

if TYPE_CHECKING:
    from normcheck.bench.compare import Comparison
    from normcheck.bench.records import BenchReport

MAX_PER_KIND = 10  # annotations of one kind GitHub shows for a step
TITLE_WIDTH = 100  # a cause longer than this is cut in the title (the message has it whole)
LISTED = 4  # values of a field (dtypes, shapes) named in a message before "..."
STATUS_ORDER = {"error": 0, "fail": 1, "known": 2}


def escape_data(text: str) -> str:
    """A workflow command's message: % first, so an escape already in the text stays literal."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (file, title)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class Annotation:
    kind: str  # "error", "warning" or "notice"
    title: str
    message: str
    file: str | None = None
    line: int | None = None
    checks: int = 1  # rows it stands for

    def command(self) -> str:
        props = []
        if self.file:
            props.append(f"file={escape_property(self.file)}")
            if self.line is not None:
                props.append(f"line={self.line}")
        if self.title:
            props.append(f"title={escape_property(self.title)}")
        head = f"::{self.kind}" + (" " + ",".join(props) if props else "")
        return f"{head}::{escape_data(self.message)}"


# where(spec) -> (path shown, line) or None
Locator = Callable[[str], tuple[str, int | None] | None]


def locator(workspace: str | None = None, cwd: Path | None = None) -> Locator:
    """Finds a SPEC's file and line once per SPEC, never importing it."""
    cache: dict[str, tuple[str, int | None] | None] = {}

    def where(spec: str) -> tuple[str, int | None] | None:
        if spec not in cache:
            found = locate(spec, cwd=cwd)
            cache[spec] = None if found is None else (display_path(found.path, workspace, cwd), found.line)
        return cache[spec]

    return where


# ---------------------------------------------------------------------------------------- verify


def render_github(
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    specs: Sequence[str | None] | None = None,
    *,
    workspace: str | None = None,
    cwd: Path | None = None,
    limit: int = MAX_PER_KIND,
) -> str:
    """The annotations of a verify run and a last plain line. ``specs``: for each record, the
    SPEC of the user implementation it checks (None for a built-in's row)."""
    notes = verify_annotations(records, bool(summary.get("strict")), specs, locator(workspace, cwd), limit)
    lines = [a.command() for a in notes]
    lines.append(verify_summary_line(summary, notes))
    return "\n".join(lines) + "\n"


def verify_summary_line(summary: dict[str, Any], notes: Sequence[Annotation]) -> str:
    strict = bool(summary.get("strict"))
    counts = {s: summary.get(s, 0) for s in ("pass", "fail", "error", "known", "skip")}
    failing = counts["fail"] + counts["error"] + (counts["known"] if strict else 0)
    verdict = "interrupted" if summary.get("interrupted") else ("FAILED" if failing else "passed")
    shown = sum(a.checks for a in notes)
    return (
        f"normcheck verify {verdict}: {counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
        f"{counts['known']} known defects, {counts['skip']} skipped ({summary.get('cases', 0)} cases); "
        f"{_n(len(notes), 'annotation')} for {_n(shown, 'check')}"
    )


@dataclass
class _Group:
    kind: str
    status: str
    title: str
    spec: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    first: int = 0


def verify_annotations(
    records: list[dict[str, Any]],
    strict: bool,
    specs: Sequence[str | None] | None = None,
    where: Locator | None = None,
    limit: int = MAX_PER_KIND,
) -> list[Annotation]:
    """One annotation per group of failing, erroring and known rows: errors for failures and
    errors (and known defects with ``strict``), notices for known defects otherwise."""
    groups: dict[tuple, _Group] = {}
    for i, r in enumerate(records):
        status = r.get("status")
        if status not in STATUS_ORDER:
            continue
        kind = "error" if status != "known" or strict else "notice"
        spec = specs[i] if specs is not None and i < len(specs) else None
        cause_key, what = _cause(r)
        key = (kind, status, r.get("framework"), r.get("impl"), spec, r.get("op"), r.get("against"), cause_key)
        if key not in groups:
            groups[key] = _Group(kind, str(status), f"normcheck: {_who(r)}: {_short(what)}", spec, first=i)
        groups[key].rows.append(r)
    ordered = sorted(groups.values(), key=lambda g: (STATUS_ORDER[g.status], -len(g.rows), g.first))
    notes: list[Annotation] = []
    for kind in ("error", "warning", "notice"):
        of_kind = [g for g in ordered if g.kind == kind]
        notes += _limited(kind, of_kind, limit, lambda g: _verify_annotation(g, where))
    return notes


def _cause(r: dict[str, Any]) -> tuple[str, str]:
    """(grouping key, words for the title) of a failing row's cause."""
    status, check = r.get("status"), str(r.get("check"))
    d = r.get("diagnosis") or {}
    if status == "error":
        return f"error:{check}", "error" if check == "run" else f"error in {check}"
    if status == "known":
        cause = str(r.get("message", "")).split(". ", 1)[0]
        return f"known:{cause}", cause
    if d.get("hypothesis"):
        return f"cause:{d.get('cause')}", str(d.get("cause"))
    return f"check:{check}", f"{check} fails (cause unknown)"


def _who(r: dict[str, Any]) -> str:
    fw = r.get("framework")
    impl = str(r.get("impl"))
    name = impl if fw == "user" else f"{fw} {impl}"
    against = f" vs {r['against']}" if r.get("against") else ""
    return f"{r.get('op')} {name}{against}"


def _verify_annotation(g: _Group, where: Locator | None) -> Annotation:
    rows = g.rows
    cases = {(r.get("shape"), r.get("params"), r.get("dtype"), r.get("layout"), r.get("input")) for r in rows}
    word = {"fail": "failing", "error": "erroring", "known": "known-defect"}[g.status]
    head = (
        f"{_n(len(rows), word + ' check')} ({_counted(r.get('check') for r in rows)}) in {_n(len(cases), 'case')}; "
        f"dtypes {_listed(r.get('dtype') for r in rows)}; shapes {_listed(_shape(r) for r in rows)}; "
        f"layouts {_listed(r.get('layout') for r in rows)}; inputs {_listed(r.get('input') for r in rows)}"
    )
    if rows[0].get("against"):
        head += f"; compared with {rows[0]['against']}"
    lines = [head + "."]
    if g.status == "error":
        messages = list(dict.fromkeys(str(r.get("message", "")) for r in rows))
        lines += [f"Error: {m}" for m in messages[:3]]
        if len(messages) > 3:
            lines.append(f"... and {len(messages) - 3} other error messages.")
    else:
        worst = max(rows, key=_badness)
        message = str(worst.get("message", ""))
        if g.status == "known":
            cause, _, message = message.partition(". ")
            lines.append(f"Known defect: {cause.removeprefix('known defect: ')}.")
        # a row held to a rounding band (--policy) has no rtol/atol tolerance: its message says the band
        tolerance = f", tolerance {worst['tolerance']}" if worst.get("tolerance") else ""
        lines.append(
            f"Worst: {worst.get('check')} on {_case(worst)}: max abs err {_num(worst.get('max_abs_err'))}, "
            f"max rel err {_num(worst.get('max_rel_err'))}{tolerance}; {message}"
        )
        d = worst.get("diagnosis")
        if d and g.status == "fail":
            lines.append(f"Diagnosis: {d.get('summary') or d.get('cause')}")
    if g.status == "known" and g.kind == "error":
        lines.append("A known framework defect fails the run under --strict.")
    found = where(g.spec) if where is not None and g.spec else None
    file, line = found if found is not None else (None, None)
    return Annotation(g.kind, g.title, "\n".join(lines), file, line, len(rows))


def _limited(kind: str, groups: list[_Group], limit: int, make: Callable[[_Group], Annotation]) -> list[Annotation]:
    """At most ``limit`` annotations of one kind: past it, the last one lists the groups left."""
    if len(groups) <= limit:
        return [make(g) for g in groups]
    shown, rest = groups[: max(limit - 1, 0)], groups[max(limit - 1, 0) :]
    checks = sum(len(g.rows) for g in rest)
    listed = [f"- {g.title.removeprefix('normcheck: ')} ({_n(len(g.rows), 'check')})" for g in rest[:20]]
    if len(rest) > 20:
        listed.append(f"- ... and {len(rest) - 20} more")
    more = Annotation(
        kind,
        f"normcheck: {len(rest)} more groups of {_n(checks, 'check')}",
        "GitHub shows few annotations per step; these groups are not annotated one by one:\n"
        + "\n".join(listed)
        + "\nThe job summary and the JSON report (--format json --output FILE) list every check.",
        checks=checks,
    )
    return [*(make(g) for g in shown), more]


def _badness(r: dict[str, Any]) -> float:
    """How far beyond its tolerance a row is: the error over atol (NaN and inf worst)."""
    err = _float(r.get("max_abs_err"))
    if math.isnan(err):
        return math.inf
    atol = _float(r.get("atol"))
    return err / atol if atol > 0 and math.isfinite(atol) else err


def _float(v: Any) -> float:
    if v is None:
        return -math.inf
    try:
        return float(v)  # "inf" and "nan" travel as strings
    except (TypeError, ValueError):
        return -math.inf


def _num(v: Any) -> str:
    return "-" if v is None else (f"{v:.3g}" if isinstance(v, float | int) else str(v))


def _shape(r: dict[str, Any]) -> str:
    params = r.get("params")
    return f"{r.get('shape')}" + (f" {params}" if params and params != "-" else "")


def _case(r: dict[str, Any]) -> str:
    return f"{_shape(r)} {r.get('dtype')} {r.get('layout')} {r.get('input')}"


def _listed(values: Iterable[Any]) -> str:
    unique = list(dict.fromkeys(str(v) for v in values))
    return ", ".join(unique[:LISTED]) + (f" (+{len(unique) - LISTED} more)" if len(unique) > LISTED else "")


def _counted(values: Iterable[Any]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in counts.items())


def _short(text: str, width: int = TITLE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


# ----------------------------------------------------------------------------------------- bench


def render_bench_github(
    report: BenchReport,
    comparison: Comparison | None = None,
    spec: str | None = None,
    *,
    workspace: str | None = None,
    cwd: Path | None = None,
    limit: int = MAX_PER_KIND,
) -> str:
    """A bench run's annotations: an error per group of error rows and per implementation with
    regressions (both fail the run), a warning per group of out-of-memory rows and for
    differing environments; then one plain line. ``spec``: the user implementation's SPEC."""
    where = locator(workspace, cwd)
    found = where(spec) if spec else None
    file, line = found if found is not None else (None, None)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in (r.as_dict() for r in report.results):
        if row["status"] in ("error", "oom"):
            groups.setdefault((row["status"], row["framework"], row["impl"], row["op"]), []).append(row)
    errors: list[Annotation] = []
    warnings: list[Annotation] = []
    for (status, fw, impl, op), rows in groups.items():
        reasons = list(dict.fromkeys(str(r.get("reason") or "") for r in rows))
        title = f"normcheck bench: {op} {impl if fw == 'user' else f'{fw} {impl}'}: " + (
            "error" if status == "error" else "out of memory"
        )
        text = f"{_n(len(rows), 'case')}, shapes {_listed(r['shape'] for r in rows)}:\n" + "\n".join(reasons[:3])
        at = (file, line) if fw == "user" else (None, None)
        kind = "error" if status == "error" else "warning"
        (errors if kind == "error" else warnings).append(Annotation(kind, title, text, *at, len(rows)))
    if comparison is not None:
        slower: dict[tuple, list[Any]] = {}
        for change in comparison.slower:
            c = change.new.case
            slower.setdefault((c.framework, c.impl, c.op), []).append(change)
        for (fw, impl, op), changes in slower.items():
            worst = max(changes, key=lambda ch: ch.ratio)
            c = worst.new.case
            text = (
                f"{_n(len(changes), 'case')} slower than the baseline by more than {comparison.threshold:.0%} "
                f"beyond both runs' spread. Worst: {op} {c.pass_} {c.mode} {c.dtype} shape "
                f"{'x'.join(map(str, c.shape))}: {worst.old.median * 1e3:.3g} ms -> {worst.new.median * 1e3:.3g} ms "
                f"({worst.ratio:.2f}x)"
            )
            at = (file, line) if fw == "user" else (None, None)
            title = f"normcheck bench: {op} {impl if fw == 'user' else f'{fw} {impl}'}: slower"
            errors.append(Annotation("error", title, text, *at, len(changes)))
        if comparison.env_differences:
            warnings.append(
                Annotation(
                    "warning",
                    "normcheck bench: the compared runs differ",
                    "\n".join(comparison.env_differences),
                )
            )
    notes = _cap(errors, limit) + _cap(warnings, limit)
    counts = report.counts()
    verdict = "interrupted" if report.interrupted else ("FAILED" if errors else "ran")
    last = (
        f"normcheck bench {verdict}: {counts['ok']} measured, {counts['skip']} skipped, {counts['error']} errors, "
        f"{counts['oom']} out of memory"
        + (f", {len(comparison.slower)} slower" if comparison is not None else "")
        + f"; {_n(len(notes), 'annotation')}"
    )
    return "\n".join([*(a.command() for a in notes), last]) + "\n"


def _cap(notes: list[Annotation], limit: int) -> list[Annotation]:
    if len(notes) <= limit:
        return notes
    shown, rest = notes[: max(limit - 1, 0)], notes[max(limit - 1, 0) :]
    listed = "\n".join(f"- {a.title.removeprefix('normcheck bench: ')}" for a in rest[:20])
    more = Annotation(rest[0].kind, f"normcheck bench: {len(rest)} more", listed, checks=sum(a.checks for a in rest))
    return [*shown, more]


# --------------------------------------------------------------------------------- job summary


def under_github_actions(env: Mapping[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


def default_format(to_stdout: bool, env: Mapping[str, str] | None = None) -> str:
    """The format when --format is not given: github under GitHub Actions when the report goes to
    stdout, else table (a file keeps the usual default)."""
    return "github" if to_stdout and under_github_actions(env) else "table"


def github_output(fmt: str, to_stdout: bool, env: Mapping[str, str] | None = None) -> tuple[bool, bool]:
    """(print the annotations on stdout besides the report, append the job summary): with
    ``--format github`` the report is the annotations, and the summary is appended; under GitHub
    Actions with the report in a file (stdout free), both."""
    if fmt == "github":
        return False, True
    extra = under_github_actions(env) and not to_stdout
    return extra, extra


def append_step_summary(markdown: str, env: Mapping[str, str] | None = None) -> str | None:
    """Append ``markdown`` to the file GITHUB_STEP_SUMMARY names (never replacing what earlier
    steps wrote); nothing when it is unset. The problem in words when it cannot be written."""
    path = (os.environ if env is None else env).get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    try:
        if not os.path.isfile(path) and os.path.exists(path):
            return f"cannot append the job summary to {path}: not a regular file"
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as e:
        return f"cannot append the job summary to {path}: {e.strerror or e}"
    return None
