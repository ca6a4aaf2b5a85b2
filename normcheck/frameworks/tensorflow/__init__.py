"""TensorFlow: the Keras 3 layers and the raw tf.nn ops (adapter.py), the user's Keras layers
(forms.py), their timed calls (bench.py), and their conventions and known defects (facts.py).
Importing this package imports no framework."""
