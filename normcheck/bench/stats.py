"""Order statistics of timing samples (seconds per call)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOISY_IQR = 0.10  # IQR/median above this marks a row noisy (torch.utils.benchmark's threshold)


def quantile(samples: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(samples, dtype=np.float64), q))


def median(samples: Sequence[float]) -> float:
    return quantile(samples, 0.5)


def iqr(samples: Sequence[float]) -> float:
    return quantile(samples, 0.75) - quantile(samples, 0.25)


def relative_iqr(samples: Sequence[float]) -> float:
    m = median(samples)
    return iqr(samples) / m if m > 0 else float("inf")
