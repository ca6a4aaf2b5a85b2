"""Parameter summaries from any array."""

from __future__ import annotations

import numpy as np

from normcheck.model.stats import summarize


def test_min_max_mean_in_float64_with_the_original_dtype():
    s = summarize("weight", "w", np.array([1, 2, 3], dtype=np.float16))
    assert (s.shape, s.dtype, s.min, s.max, s.mean) == ((3,), "float16", 1.0, 3.0, 2.0)
    assert isinstance(s.mean, float)


def test_non_finite_values_are_left_out_and_said():
    s = summarize("running_var", "v", np.array([1.0, np.nan, np.inf, 3.0]))
    assert (s.min, s.max, s.mean) == (1.0, 3.0, 2.0)
    assert "2 non-finite" in s.note


def test_empty_and_non_numeric():
    assert summarize("bias", "b", np.zeros((0,))).note == "empty"
    assert summarize("bias", "b", np.array(["a"])).min is None
