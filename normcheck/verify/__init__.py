"""verify: implementations checked against the float64 reference.

The same shape as bench: request (what was asked) → plan (the case matrix) → run (one case in
a worker) → judge (against the reference, with diagnosis) → records. normcheck.engine runs a
plan in worker processes; normcheck.verify.local runs one in this process.
"""
