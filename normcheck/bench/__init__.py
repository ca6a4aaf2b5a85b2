"""normcheck bench: timing of each framework's normalization ops against the machine's bandwidth.

plan.py picks the cases, each framework's bench module (normcheck/frameworks/<name>/bench.py)
turns one implementation into a timed call (a target.Target), timer.py measures it, metrics.py
derives bytes and bandwidth, run.py drives the whole run and returns records (records.py);
rendering lives in normcheck.report.
"""
