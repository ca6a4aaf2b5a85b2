"""Text made safe for XML 1.0, which forbids most control characters even when escaped."""

from __future__ import annotations

import re
from xml.etree import ElementTree as ET

# C0 controls other than tab, newline and carriage return; surrogates (a lone one cannot be
# encoded at all); and the two noncharacters U+FFFE and U+FFFF
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def xml_safe(text: str) -> str:
    r"""``text`` with every character XML 1.0 forbids written out as Python would: BEL -> "\x07"."""
    return FORBIDDEN.sub(_escape, text)


def make_tree_safe(root: ET.Element) -> None:
    """Pass every text, tail and attribute value under ``root`` through xml_safe, in place."""
    for element in root.iter():
        if element.text:
            element.text = xml_safe(element.text)
        if element.tail:
            element.tail = xml_safe(element.tail)
        for key, value in element.attrib.items():
            element.set(key, xml_safe(value))
