"""Print verify's quick profile as normcheck/verify/quick_cases.py holds it (QUICK), derived
anew, and on stderr what each case covers. How the cases are chosen:
normcheck.verify.quick_derivation.

    python benchmarks/derive_quick_profile.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import fields

from normcheck.names import OP_NAMES
from normcheck.ops import OpParams
from normcheck.verify.quick_cases import QuickCase
from normcheck.verify.quick_derivation import derive, grid_items


def _source(case: QuickCase) -> str:
    """The case as quick_cases.py writes it: Q(shape, dtype, kind, params that differ from the default)."""
    default = OpParams()
    given = [
        f"{f.name}={getattr(case.params, f.name)!r}"
        for f in fields(OpParams)
        if getattr(case.params, f.name) != getattr(default, f.name)
    ]
    return f"Q({case.shape}, {case.dtype!r}, {case.kind!r}{''.join(', ' + g for g in given)})"


def main() -> None:
    start = time.perf_counter()
    print("QUICK: dict[str, tuple[QuickCase, ...]] = {")
    for op in OP_NAMES:
        items = grid_items(op)
        print(f'    "{op}": (')
        for case in derive(op):
            covered = sorted(i for i in items[case] if ":" not in i)
            print(f"        {_source(case)},")
            print(f"  {op} {_source(case)}: {', '.join(covered) or 'its dtype, rank and parameters'}", file=sys.stderr)
        print("    ),")
    print("}")
    print(f"# derived in {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
