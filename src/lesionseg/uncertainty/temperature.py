"""Temperature scaling of the MC samples' logits, fitted on held-out pixels by likelihood."""

import numpy as np
import torch

TEMPERATURE_CANDIDATES = np.round(np.geomspace(0.5, 4.0, 43), 4)


def mean_probability(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits N×T×H×W -> the MC mean probability N×H×W, as served."""
    return torch.sigmoid(logits / temperature).mean(dim=1)


def negative_log_likelihood(probability: torch.Tensor, truth: torch.Tensor) -> float:
    clamped = probability.clamp(1e-6, 1 - 1e-6)
    return float(-(truth * clamped.log() + (1 - truth) * (1 - clamped).log()).mean())


def fit_temperature(logits: torch.Tensor, truth: torch.Tensor) -> tuple[float, dict[float, float]]:
    """The candidate temperature whose MC mean probability best explains the expert masks."""
    losses = {
        float(t): negative_log_likelihood(mean_probability(logits, float(t)), truth) for t in TEMPERATURE_CANDIDATES
    }
    return min(losses, key=losses.get), losses


def choose_review_threshold(scores: np.ndarray, referred_fraction: float) -> float:
    """The score above which `referred_fraction` of the images go to a person."""
    return float(np.quantile(scores, 1.0 - referred_fraction))
