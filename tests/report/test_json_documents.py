"""Every JSON document normcheck writes starts with the same head: tool, version, kind, schema."""

from __future__ import annotations

import json

from normcheck import __version__
from normcheck.bench.records import BenchReport
from normcheck.report.bench_json import render_bench_json
from normcheck.report.conventions import render_conventions
from normcheck.report.json import render_json
from normcheck.report.json_document import SCHEMAS


def _head(text: str) -> dict:
    doc = json.loads(text)
    return {k: doc[k] for k in ("normcheck", "kind", "schema")}


def test_verify_json_has_its_schema():
    assert _head(render_json([], {"pass": 0})) == {
        "normcheck": __version__,
        "kind": "verify",
        "schema": SCHEMAS["verify"],
    }


def test_bench_json_has_its_schema():
    report = BenchReport(env={}, settings={}, results=[])
    assert _head(render_bench_json(report)) == {"normcheck": __version__, "kind": "bench", "schema": SCHEMAS["bench"]}


def test_conventions_json_has_its_schema():
    head = _head(render_conventions("json", [{"op": "bn", "property": "eps"}]))
    assert head == {"normcheck": __version__, "kind": "conventions", "schema": SCHEMAS["conventions"]}


def test_the_version_has_one_source():
    import importlib.metadata

    assert importlib.metadata.version("normcheck") == __version__
