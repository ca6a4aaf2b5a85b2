"""normcheck: verify and profile normalization layers against float64 reference formulas."""

__version__ = "0.1.0"
