"""User Weight Standardization code's signatures (normcheck.user.ws_forms): which parameters it
takes, the eps it declares, and the eps each call style holds it to."""

from __future__ import annotations

from normcheck.user import guess_op
from normcheck.user.ws_forms import EPS_NAMES, PADDING_NAMES, declared_eps, takes, ws_settings
from normcheck.ws_conventions import WS_CONVENTIONS

CONV = WS_CONVENTIONS["ws"]


class Timm:
    def __init__(self, in_channels, out_channels, kernel_size, padding=None, bias=False, eps=1e-6): ...


class HardCoded:
    def __init__(self, in_channels, out_channels, kernel_size, padding=0, bias=True): ...


def keyword_only(x, weight, bias=None, *, pad=0, epsilon=1e-5): ...


def anything(x, weight, bias, **kwargs): ...


def eps_not_a_number(x, weight, bias, eps=None): ...


def test_takes_finds_the_parameter_by_any_of_its_names():
    assert takes(Timm, EPS_NAMES) == "eps" and takes(Timm, PADDING_NAMES) == "padding"
    assert takes(HardCoded, EPS_NAMES) is None
    assert takes(keyword_only, EPS_NAMES) == "epsilon" and takes(keyword_only, PADDING_NAMES) == "pad"
    assert takes(anything, EPS_NAMES) == "eps"  # **kwargs takes it


def test_declared_eps_is_a_number_or_none():
    assert declared_eps(Timm) == 1e-6
    assert declared_eps(keyword_only) == 1e-5
    assert declared_eps(HardCoded) is None
    assert declared_eps(anything) is None
    assert declared_eps(eps_not_a_number) is None


def test_each_call_style_holds_the_code_to_its_eps():
    explicit = 1e-4
    assert ws_settings(Timm, CONV, "float32", None, explicit, omit_defaults=False).eps == explicit
    assert ws_settings(Timm, CONV, "float32", 1e-3, explicit, omit_defaults=False).eps == 1e-3
    assert ws_settings(Timm, CONV, "float32", None, explicit, omit_defaults=True).eps == 1e-6  # declared
    # a hard-coded eps cannot be known: --eps says it, else timm's default
    assert ws_settings(HardCoded, CONV, "float32", None, explicit, omit_defaults=True).eps == 1e-6
    assert ws_settings(HardCoded, CONV, "float32", 1e-10, explicit, omit_defaults=True).eps == 1e-10


def test_ws_names_are_recognised():
    assert guess_op("StdConv2d") == guess_op("WSConv2d") == guess_op("weight_standardized_conv") == "ws"
