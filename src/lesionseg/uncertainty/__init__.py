"""Monte Carlo Dropout: the deterministic trunk once, the stochastic tail many times as one batch."""
