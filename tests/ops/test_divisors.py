"""divisors(): the same sorted list as a linear search, in O(sqrt(n)) steps."""

from __future__ import annotations

import time

from normcheck.ops import OpParams
from normcheck.ops._op import divisors
from normcheck.ops.group_norm import OP as GROUP_NORM


def naive_divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def test_divisors_match_a_linear_search() -> None:
    for n in range(1, 501):
        assert divisors(n) == naive_divisors(n), n


def test_divisors_of_a_large_power_of_two_are_quick() -> None:
    start = time.perf_counter()
    assert divisors(2**40) == [2**k for k in range(41)]
    assert time.perf_counter() - start < 5


def test_group_norm_variants_of_a_huge_prime_channel_count_are_quick() -> None:
    c = 1_000_000_007  # prime: a linear search would take minutes
    start = time.perf_counter()
    cases = GROUP_NORM.cases_for_shape((1, c), None, None)
    assert time.perf_counter() - start < 5
    assert cases == [OpParams(groups=1), OpParams(groups=c)]
