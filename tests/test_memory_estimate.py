"""The memory estimate that keeps a hopeless shape away from allocation."""

from __future__ import annotations

import pytest

from normcheck import memory_estimate
from normcheck.memory_estimate import available_memory, format_bytes, memory_problem, tensor_bytes_estimate

GIB = 1024**3


def test_estimate_counts_twelve_float64_arrays_by_default() -> None:
    assert tensor_bytes_estimate((2, 3, 4)) == 24 * 8 * 12
    assert tensor_bytes_estimate((2, 3, 4), dtype_count=1) == 24 * 8


def test_estimate_of_a_huge_shape_is_exact() -> None:
    assert tensor_bytes_estimate((100_000, 100_000, 10, 10)) == 10**12 * 96


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (int(23.4 * GIB), "23.4 GiB"),
        (int(87.3 * 1024**4), "87.3 TiB"),
        (3 * 1024**7, "3072.0 EiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_a_shape_too_big_for_the_machine_is_one_line_naming_both_sizes() -> None:
    problem = memory_problem((100_000, 100_000, 10, 10), available=int(23.4 * GIB))
    assert problem == (
        "shape 100000,100000,10,10 needs about 87.3 TiB for its tensors; this machine has 23.4 GiB available"
    )


def test_a_shape_that_fits_is_no_problem() -> None:
    assert memory_problem((2, 64, 8, 8), available=GIB) is None
    need = tensor_bytes_estimate((2, 64, 8, 8))
    assert memory_problem((2, 64, 8, 8), available=need) is None
    assert memory_problem((2, 64, 8, 8), available=need - 1) is not None


def test_available_memory_reads_memavailable(tmp_path, monkeypatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n")
    monkeypatch.setattr(memory_estimate, "MEMINFO", meminfo)
    assert available_memory() == 2048 * 1024


def test_available_memory_falls_back_to_physical_memory(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(memory_estimate, "MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(memory_estimate.os, "sysconf", lambda name: {"SC_PHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}[name])
    assert available_memory() == 4096 * 1000


def test_without_any_reading_nothing_is_refused(tmp_path, monkeypatch) -> None:
    def no_sysconf(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(memory_estimate, "MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(memory_estimate.os, "sysconf", no_sysconf)
    assert memory_problem((10**9, 10**9)) is None


def test_the_real_machine_refuses_an_absurd_shape() -> None:
    assert memory_problem((10**6, 10**6, 10**6)) is not None
