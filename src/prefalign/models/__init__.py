"""Model loading, scalar heads, log-probabilities and the reference model."""
