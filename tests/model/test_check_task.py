"""normcheck/model/check_task.py: the arrays of --input, read without unpickling."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.errors import UsageError
from normcheck.model.check_task import read_inputs


def test_a_npy_is_one_input_and_a_npz_one_per_array_in_order(tmp_path):
    a, b = np.arange(6.0).reshape(2, 3), np.ones((4,), dtype=np.float16)
    np.save(tmp_path / "one.npy", a)
    (got,) = read_inputs(str(tmp_path / "one.npy"))
    np.testing.assert_array_equal(got, a)
    np.savez(tmp_path / "two.npz", x=a, mask=b)
    got_a, got_b = read_inputs(str(tmp_path / "two.npz"))
    np.testing.assert_array_equal(got_a, a)
    assert got_b.dtype == np.float16


def test_corrupt_and_pickled_files_are_usage_errors(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(UsageError, match=r"not a readable \.npy or \.npz file"):
        read_inputs(str(tmp_path / "bad.npy"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="not a readable"):
        read_inputs(str(tmp_path / "objects.npy"))
