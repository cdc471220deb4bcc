import numpy as np
import torch

from lesionseg.uncertainty.scores import expected_dice_error
from lesionseg.uncertainty.temperature import choose_review_threshold, fit_temperature


def test_temperature_recovers_overconfidence():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4, 1, 32, 32, generator=generator) * 2
    truth = (torch.rand(4, 32, 32, generator=generator) < torch.sigmoid(true_logits[:, 0])).float()
    # A model twice as confident as the truth warrants needs temperature ≈ 2.
    temperature, losses = fit_temperature(true_logits.repeat(1, 3, 1, 1) * 2, truth)
    assert 1.6 < temperature < 2.5
    assert losses[temperature] < losses[min(losses, key=lambda t: abs(t - 1.0))]


def test_review_threshold_flags_the_requested_share():
    scores = np.linspace(0, 1, 101)
    threshold = choose_review_threshold(scores, 0.1)
    assert np.mean(scores >= threshold) == np.float64(11 / 101)


def test_expected_dice_error_is_zero_when_certain_and_grows_with_doubt():
    mask = np.zeros((10, 10), bool)
    mask[3:7, 3:7] = True
    assert expected_dice_error(mask.astype(np.float32), mask) == 0.0
    blurred = np.where(mask, 0.7, 0.2).astype(np.float32)
    assert expected_dice_error(blurred, mask) > 0.3
    assert expected_dice_error(np.zeros((4, 4), np.float32), np.zeros((4, 4), bool)) == 0.0
