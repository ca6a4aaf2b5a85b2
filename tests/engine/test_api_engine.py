"""The Python API runs cases in workers too: the caller's process, signal handlers and timers are
left as they were, whatever the checked code does."""

from __future__ import annotations

import signal

import pytest
from _require import require

import normcheck

SMALL = {"framework": "torch", "shapes": [(2, 4, 3, 3)], "groups": 2, "dtypes": "float32", "kinds": "normal"}


@pytest.fixture(autouse=True)
def _torch():
    require("torch")


def test_the_callers_alarm_handler_and_timer_are_left_alone():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    signal.setitimer(signal.ITIMER_REAL, 600)
    try:
        report = normcheck.check("gn", "fixtures/torch_functional.py:group_norm", **SMALL)
        assert report.ok
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL and not fired
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 500 < remaining <= 600
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.slow
def test_code_that_exits_is_reported_not_raised_in_the_caller():
    report = normcheck.check("gn", "fixtures/hostile.py:group_norm_os_exit", **SMALL)
    assert not report.ok
    assert all(r.status == "error" and "worker died" in r.message for r in report.results)


def test_an_object_that_no_worker_can_load_runs_in_this_process():
    import torch.nn.functional as F

    report = normcheck.check("gn", lambda x, g, w=None, b=None, eps=1e-5: F.group_norm(x, g, w, b, eps), **SMALL)
    assert report.ok and report.counts["pass"] > 0


def test_jobs_is_an_option():
    with pytest.raises(normcheck.errors.UsageError, match="--jobs must be at least 1"):
        normcheck.check("gn", "fixtures/torch_functional.py:group_norm", jobs=0, **SMALL)


def test_ctrl_c_during_check_is_raised_in_the_caller_with_its_handler_restored():
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        normcheck.check("gn", "fixtures/hostile.py:group_norm_ctrl_c_at_the_caller", **SMALL)
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"jobs": "2"}, "jobs must be a whole number"),
        ({"jobs": True}, "jobs must be a whole number"),
        ({"compile_cache": "yes"}, "compile_cache must be True or False"),
    ],
)
def test_api_options_are_checked(options, needle):
    with pytest.raises(normcheck.errors.UsageError, match=needle):
        normcheck.check("gn", "fixtures/torch_functional.py:group_norm", **options, **SMALL)
