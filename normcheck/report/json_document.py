"""The head every JSON document normcheck writes starts with: which tool and version wrote it,
what kind of document it is, and the version of that kind's layout.

A schema number changes when a field is renamed, removed or changes meaning; adding a field
keeps it. Readers (``bench --compare``, a user's CI script) check it before reading on.
"""

from __future__ import annotations

from typing import Any

from normcheck import __version__

SCHEMAS = {"verify": 1, "bench": 1, "conventions": 1, "model-inventory": 1, "model-port": 1}


def header(kind: str) -> dict[str, Any]:
    return {"normcheck": __version__, "kind": kind, "schema": SCHEMAS[kind]}
