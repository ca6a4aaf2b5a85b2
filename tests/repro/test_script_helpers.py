"""The helpers a reproducer script carries as text (it must not import normcheck) behave as the
normcheck functions they copy: the script gives user code its options under the same names."""

from __future__ import annotations

import inspect

import pytest

from normcheck.repro.bindings import OPTIONS
from normcheck.user.binding import takes


def _script_takes():
    namespace: dict = {"inspect": inspect}
    exec(OPTIONS, namespace)
    return namespace["takes"], namespace["options"]


def positional_only(x, eps, /, padding=1):
    return x


def keyword(x, *, epsilon=1e-6, pad=0):
    return x


def catch_all(x, **kwargs):
    return x


class Conv:
    def __init__(self, in_channels, out_channels, kernel_size, padding=0, eps=1e-5):
        pass


@pytest.mark.parametrize("fn", [positional_only, keyword, catch_all, Conv, len, print])
@pytest.mark.parametrize("names", [("eps", "epsilon"), ("padding", "pad"), ("variance_epsilon",)])
def test_the_scripts_takes_is_normchecks(fn, names):
    script_takes, _ = _script_takes()
    assert script_takes(fn, names) == takes(fn, names)


def test_the_scripts_options_names_each_value_as_takes_does():
    _, options = _script_takes()
    assert options(keyword, (("eps", "epsilon"), 1e-3), (("padding", "pad"), 2)) == {"epsilon": 1e-3, "pad": 2}
    assert options(positional_only, (("eps", "epsilon"), 1e-3), (("padding", "pad"), 2)) == {"padding": 2}
