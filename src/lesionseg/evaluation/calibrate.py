"""Fits what the served uncertainty depends on, on the validation split:
the logits' temperature, then the uncertainty score above which a person should look."""

import numpy as np
import torch
from tqdm import tqdm

from lesionseg.data.pairs import PairRecord, read_image, read_square_truth
from lesionseg.defaults import DEFAULT_TTA
from lesionseg.predictor import Predictor
from lesionseg.uncertainty.scores import expected_dice_error
from lesionseg.uncertainty.temperature import choose_review_threshold, fit_temperature, mean_probability


def calibrate(
    predictor: Predictor,
    records: list[PairRecord],
    samples: int,
    seed: int,
    referred_fraction: float,
    tta: bool = DEFAULT_TTA,
) -> dict:
    size = predictor.input_size
    logits, truths = [], []
    for record in tqdm(records, desc="sampling calibration pairs", unit="image"):
        batch = predictor.model_input(read_image(record.image_path))
        logits.append(torch.from_numpy(predictor.sample(batch, samples, seed, tta)[0][0]))
        truths.append(torch.from_numpy(read_square_truth(record.mask_path, size)).float())
    stacked = torch.stack(logits)
    temperature, losses = fit_temperature(stacked, torch.stack(truths))
    # The served score, from the samples already drawn: the MC mean at the fitted temperature.
    probabilities = mean_probability(stacked, temperature).numpy()
    scores = np.array([expected_dice_error(probability, probability >= 0.5) for probability in probabilities])
    return {
        "temperature": temperature,
        "negative_log_likelihood": {
            "before": losses[min(losses, key=lambda t: abs(t - 1.0))],
            "after": losses[temperature],
        },
        "review_threshold": choose_review_threshold(scores, referred_fraction),
        "review_target_fraction": referred_fraction,
        "fitted_on": {
            "pairs": len(records),
            "sets": sorted({r.source for r in records}),
            "samples": samples,
            "seed": seed,
            "tta": tta,
        },
    }
