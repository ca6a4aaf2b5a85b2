"""The stress profile's memory_format check: channels_last in, channels_last out.

A network kept in channels-last memory (convolutions' fast layout) expects each layer to hand it
on: a norm that returns a contiguous output makes the next layer copy it back, or run its slow
path, on every call (pytorch#111824). The values may all be right, so this is a check row of its
own, pass or fail, never given a numeric diagnosis. It is judged for the ops that keep the channel
axis (batch, instance and group norm) on channels-last input: the output and the input's gradient
as the backward computed it (``.grad`` itself PyTorch lays out like the input, whatever the
kernel returned). Layer and RMS norm are left out: they normalize the trailing axes, and PyTorch's
own layer norm makes any input contiguous first, so no format is promised there.

The formats come from the adapter (``RunOutput.memory_formats``, recorded by the torch adapter and
its user forms); a framework that records none has no memory_format row.
"""

from __future__ import annotations

from typing import Protocol

from normcheck.frameworks.base import KnownIssue, RunOutput
from normcheck.names import CHANNELS_LAST, CONTIGUOUS
from normcheck.verify.records import FAIL, KNOWN, PASS, Case, CheckResult, Diagnosis

MEMORY_FORMAT = "memory_format"  # the check's name
# the KnownIssue "hypothesis" of a documented format loss: every result came back plainly
# contiguous; a row is confirmed when the recorded formats are exactly that
CONTIGUOUS_OUTPUT = "contiguous_output"
FORMAT_OPS = ("bn", "in", "gn")  # the ops whose output keeps the input's channel axis and format


class _Issues(Protocol):
    """What the check needs of a framework: its documented defects (a Framework or its facts)."""

    def known_issues_for(self, case: Case, check: str) -> tuple[KnownIssue, ...]: ...


def memory_format_rows(case: Case, out: RunOutput, framework: _Issues) -> list[CheckResult]:
    """The case's memory_format row: pass when the output and the input's gradient kept
    channels_last, fail naming what each came back as, known when a documented defect of the
    framework says its results come back contiguous and they all do. No row for other layouts and
    ops, or when the implementation's formats were not recorded."""
    if case.layout != CHANNELS_LAST or case.op not in FORMAT_OPS or not out.memory_formats:
        return []
    formats = out.memory_formats
    lost = {check: fmt for check, fmt in formats.items() if fmt != CHANNELS_LAST}
    if not lost:
        return [CheckResult(case, MEMORY_FORMAT, PASS, message=f"{' and '.join(formats)} kept channels_last")]
    message = (
        "; ".join(f"{check} came back {fmt}" for check, fmt in lost.items())
        + " for channels_last input (the next channels-last layer copies it back on every call)"
    )
    issues = [i for i in framework.known_issues_for(case, MEMORY_FORMAT) if CONTIGUOUS_OUTPUT in i.hypotheses]
    if issues and set(lost.values()) == {CONTIGUOUS}:
        issue = issues[0]
        evidence = "recorded: " + ", ".join(f"{check} {fmt}" for check, fmt in formats.items())
        diagnosis = Diagnosis(CONTIGUOUS_OUTPUT, "returned contiguous for channels_last input", evidence, "check")
        known = f"known defect: {issue.cause}. {message}"
        return [CheckResult(case, MEMORY_FORMAT, KNOWN, message=known, diagnosis=diagnosis)]
    return [CheckResult(case, MEMORY_FORMAT, FAIL, message=message)]
