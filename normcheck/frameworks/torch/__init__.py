"""PyTorch: torch.nn.functional and the torch.nn layers (adapter.py), the user's torch functions and
modules (forms.py), their timed calls (bench.py), and PyTorch's conventions and known defects
(facts.py). Importing this package imports no framework."""
