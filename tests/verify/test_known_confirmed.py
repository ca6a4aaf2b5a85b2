"""Every documented framework defect is confirmed by re-running its hypothesis: on the cases its
fingerprint names, each of the framework's failing rows is known with the evidence of one of
the defect's hypotheses, none is merely fingerprinted ("unconfirmed"), and nothing else fails."""

from __future__ import annotations

import pytest
from _require import require

from normcheck.diagnosis import HYPOTHESES
from normcheck.diagnosis.weight_standardization import WS_HYPOTHESES
from normcheck.frameworks import FRAMEWORKS, facts_module
from normcheck.frameworks.base import KnownIssue
from normcheck.verify.local import run
from normcheck.verify.memory_format import CONTIGUOUS_OUTPUT, MEMORY_FORMAT
from normcheck.verify.records import ERROR, FAIL, KNOWN
from normcheck.verify.request import Request, prepare

# a memory-format defect is confirmed by the formats the adapter recorded (normcheck.verify.memory_format)
HYPOTHESIS_IDS = {h.id for h in (*HYPOTHESES, *WS_HYPOTHESES)} | {CONTIGUOUS_OUTPUT}
ISSUES = [(name, i, issue) for name in FRAMEWORKS for i, issue in enumerate(facts_module(name).KNOWN_ISSUES)]
# frameworks whose defaults take minutes to check on every kind: their issues run as slow tests
SLOW = {"tensorflow", "jax"}
# Documented defects that show only under a setting the user gives: Flax's float16 running
# variance drifts past tolerance with PyTorch's momentum 0.1 (ten times Flax's default 0.01), as
# a port from PyTorch sets it.
SHOWN_WITH = {
    ("jax", "bn", ("float16",), ("running_var",)): {"momentum": 0.1},
    # PyTorch's half-precision layer-norm weight and bias gradients: over many rows
    ("torch", "ln", ("float16", "bfloat16"), ("grad_weight", "grad_bias")): {"shapes": ["4096,64"], "kinds": "normal"},
    # the output's memory format: a row of the stress profile, on its own cases
    ("torch", "in", None, (MEMORY_FORMAT,)): {"profile": "stress", "shapes": [], "kinds": "normal"},
}


def _id(entry: tuple[str, int, KnownIssue]) -> str:
    name, i, issue = entry
    return f"{name}-{i}-{issue.ops[0]}"


@pytest.mark.parametrize("entry", ISSUES, ids=[_id(e) for e in ISSUES])
def test_every_known_issue_names_hypotheses_that_exist(entry):
    _, _, issue = entry
    assert issue.hypotheses, issue.cause
    assert set(issue.hypotheses) <= HYPOTHESIS_IDS, issue.hypotheses


# small shapes per op, with the variants normcheck derives from them (groups, modes, dims); group
# norm's 5x4 and batch norm's 2x4 and 3x4 have groups of two or three values, where some defects show
SHAPES = {
    "bn": ("6,4,5,5", "2,4", "3,4"),
    "in": ("2,4,5,5",),
    "gn": ("2,6,5,5", "5,4"),
    "ln": ("4,6,33",),
    "rms": ("4,6,33",),
    "add_ln": ("4,6,33",),
    "add_rms": ("4,6,33",),
    "adaln": ("2,5,33",),
    "ws": ("2,4,6,6",),  # a convolution of 4 output channels, 3x3 and 1x1
    "ws_gn": ("2,4,6,6",),
}


def _request(name: str, issue: KnownIssue) -> Request:
    """The narrowest request the fingerprint names: its first op and dtype, its input kinds (normal
    and large-mean data where it names none), one shape (with the batch it names), and the
    setting it shows under (SHOWN_WITH)."""
    op = issue.ops[0]
    shapes = [s if issue.batch is None else f"{issue.batch}," + s.split(",", 1)[1] for s in SHAPES[op]]
    if issue.checks == ("running_var",):  # shows on the default grid's longer training runs only
        shapes = []
    fields = {
        "ops": op,
        "frameworks": name,
        "dtypes": (issue.dtypes or ("float32",))[0],
        "kinds": ",".join(issue.kinds or ("normal", "large_mean")),
        "shapes": shapes,
    }
    return Request(**{**fields, **SHOWN_WITH.get((name, op, issue.dtypes, issue.checks), {})})


def _params(entries):
    return [pytest.param(e, id=_id(e), marks=[pytest.mark.slow] if e[0] in SLOW else []) for e in entries]


@pytest.mark.parametrize("entry", _params(ISSUES))
def test_every_known_issue_is_confirmed_by_re_running_its_hypothesis(entry):
    name, _, issue = entry
    require(name)
    prepared = prepare(_request(name, issue))
    rows = list(run(prepared.units, prepared.opts))
    mine = [r for r in rows if r.status == KNOWN and r.message.startswith(f"known defect: {issue.cause}")]
    assert mine, f"no row of the fingerprint's cases shows: {issue.cause}"
    for r in mine:
        assert r.diagnosis is not None and r.diagnosis.hypothesis in issue.hypotheses, r.message
    unconfirmed = [r.message for r in rows if r.status == KNOWN and "unconfirmed" in r.message]
    assert not unconfirmed, unconfirmed[:3]
    assert not [r for r in rows if r.status in (FAIL, ERROR)], [r.message for r in rows if r.status in (FAIL, ERROR)][
        :3
    ]
