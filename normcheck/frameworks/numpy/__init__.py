"""NumPy: no built-in implementations to verify (NumPy computes the reference); the user's CS231n
forward/backward functions (forms.py), the timed calls of those and of the reference formulas in
the case's dtype (bench.py), and the CS231n assignment's convention (facts.py)."""
