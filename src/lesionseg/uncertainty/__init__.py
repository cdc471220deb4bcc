"""Monte Carlo Dropout: the deterministic trunk once, the stochastic tail many times as one batch."""

from lesionseg.uncertainty.mc_dropout import UncertaintyMaps, sample_full_passes, sample_mc_dropout

__all__ = ["UncertaintyMaps", "sample_full_passes", "sample_mc_dropout"]
