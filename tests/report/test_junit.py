"""JUnit XML always parses, whatever characters the records carry."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest

from normcheck.report._xml import xml_safe
from normcheck.report.junit import render_junit

HOSTILE = "\x07\x00\x1b[31m"


def record(status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "op": "gn",
        "framework": "torch",
        "impl": "F.group_norm",
        "check": "forward",
        "shape": "2x6x5x5",
        "dtype": "float32",
        "status": status,
        "message": message,
        **extra,
    }


@pytest.mark.parametrize("status", ["fail", "error", "skip", "known"])
def test_control_characters_in_a_message_still_parse(status: str) -> None:
    text = render_junit([record(status, f"boom {HOSTILE} red\nsecond line")], {"strict": False, "seconds": 1.0})
    root = ET.fromstring(text.encode("utf-8"))
    body = "".join("".join(e.itertext()) + " ".join(e.attrib.values()) for e in root.iter())
    assert "\\x07\\x00\\x1b[31m" in body
    assert not any(c in body for c in "\x07\x00\x1b")


def test_control_characters_and_lone_surrogates_in_names_and_diagnosis_still_parse() -> None:
    diagnosis = {"hypothesis": "x", "cause": f"cause {HOSTILE}", "evidence": "evidence \ud800"}
    r = record("fail", "m", impl="my\x0bimpl\ud83d", dtype="float\x1f32", diagnosis=diagnosis)
    text = render_junit([r], {"strict": True})
    text.encode("utf-8")  # a lone surrogate would make the file impossible to write as UTF-8
    root = ET.fromstring(text)
    [suite] = root.iter("testsuite")
    assert suite.get("name") == "normcheck.gn.torch.my\\x0bimpl\\ud83d"
    failure = root.find(".//failure")
    assert failure is not None and "cause \\x07\\x00\\x1b[31m" in failure.text
    assert "evidence \\ud800" in failure.text


def test_xml_safe_keeps_what_xml_allows() -> None:
    text = "tab\tnewline\ncr\r é ✓ 😀 \x7f <&>"
    assert xml_safe(text) == text
    assert xml_safe("\x00\x08\x0b\x0c\x0e\x1f\ufffe\uffff") == "\\x00\\x08\\x0b\\x0c\\x0e\\x1f\\ufffe\\uffff"
