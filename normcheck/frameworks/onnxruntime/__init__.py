"""ONNX Runtime: one-node ONNX models of each op (adapter.py), their timed calls (bench.py), and the
ONNX ops' conventions and ORT's known defects (facts.py); no user forms. Importing this package
imports no framework."""
