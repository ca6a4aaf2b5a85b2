"""PyTorch's own ops pass on every shape a user may give: groups of one to three values and
constant groups in every op, every input kind, every dtype, contiguous and channels-last.

A row may pass, match a documented PyTorch defect (known) or be skipped with a reason; a failure
or an error here is a false verdict of normcheck's, not a PyTorch bug.
"""

from __future__ import annotations

import pytest
from _require import require

torch = require("torch")

from normcheck import frameworks
from normcheck.verify.local import run
from normcheck.verify.plan import Options, plan
from normcheck.verify.records import KNOWN, PASS, SKIP

# Per op, shapes whose groups hold one to three values (one of them constant with the constant
# input kind): bn with batches of 1-3 (one value per channel: evaluation only), ln/rms over 1-3
# values (k = 1 and k = ndim - 1), in over 1-3 spatial values (one: skipped, as PyTorch refuses
# it), gn with C/G in {1, 2, 3} and G = C; 2-D to 4-D, channels-last for the 4-D ones.
SMALL_GROUPS = {
    "bn": [(2, 4), (3, 4), (1, 4), (1, 3, 2), (2, 3, 1, 1), (1, 2, 1, 3), (1, 3, 1, 1)],
    "ln": [(2, 1), (3, 2), (2, 3), (1, 1), (2, 3, 1), (2, 1, 2), (4, 1, 1, 3), (2, 1, 1, 2)],
    "rms": [(2, 1), (3, 2), (2, 3), (1, 1), (2, 3, 1), (2, 1, 2), (4, 1, 1, 3), (2, 1, 1, 2)],
    "in": [(2, 3, 1), (2, 3, 2), (2, 3, 3), (1, 2, 3), (2, 3, 1, 1), (1, 2, 1, 2), (2, 2, 1, 3), (2, 1, 1, 2)],
    "gn": [(2, 8), (2, 9), (2, 6), (1, 6, 2), (2, 6, 1, 1), (3, 4, 1, 3), (2, 3, 1, 1), (1, 2, 1, 1)],
}
ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")
ACCEPTED = {PASS, KNOWN, SKIP}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors are tiny: extra threads only contend with each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(SMALL_GROUPS))
def test_pytorch_passes_on_small_and_constant_groups(op):
    opts = Options(ops=(op,), dtypes=ALL_DTYPES, shapes=tuple(SMALL_GROUPS[op]), diagnose=False)
    units = plan(opts, [frameworks.load("torch")])
    rows = list(run(units, opts))
    wrong = [
        f"{r.case.impl} {r.case.shape} {r.case.params.label()} {r.case.dtype} {r.case.layout} {r.case.kind} "
        f"{r.check}: {r.status} {r.message[:160]}"
        for r in rows
        if r.status not in ACCEPTED
    ]
    assert not wrong, f"{len(wrong)} of {len(rows)} rows:\n" + "\n".join(wrong[:40])
    # the sweep ran what it says: every shape, both layouts of the 4-D ones, every kind
    assert {r.case.shape for r in rows} == set(SMALL_GROUPS[op])
    assert {r.case.dtype for r in rows} == set(ALL_DTYPES)
    assert sum(r.status == PASS for r in rows) > len(rows) // 2
