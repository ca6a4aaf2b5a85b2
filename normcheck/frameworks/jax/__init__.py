"""JAX: the flax.linen modules (adapter.py), the user's JAX functions and Flax modules (forms.py),
their timed calls (bench.py), and their conventions and known defects (facts.py). Importing this
package imports no framework."""
