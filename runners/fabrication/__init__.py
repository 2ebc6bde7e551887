"""Random and tiny models and stand-in tokenizers, for imports with random weights (tests,
benchmarks); never imported while serving."""
