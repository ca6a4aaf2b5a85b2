"""Names the command line offers, kept free of heavy imports so --help stays instant."""

OP_NAMES = ("bn", "ln", "in", "gn", "rms")
DTYPE_NAMES = ("float64", "float32", "float16", "bfloat16")
DEFAULT_DTYPES = ("float32", "float16", "bfloat16", "float64")
KIND_NAMES = ("normal", "large_mean", "constant", "tiny_scale", "half_range")
