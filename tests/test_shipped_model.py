"""The embedded default model, judged on real ISIC pairs it never trained on, at their own size."""

from lesionseg.evaluation.evaluate import evaluate_pairs

# The first 60 pairs of the ISIC validation split (hash split, seed 0), 10 MC samples, seed 0: the
# shipped model scores a mean Jaccard of 0.855 there; the bar leaves room for floating-point drift
# across CPUs, not for a worse model. The whole split's numbers are in the README and the sidecar.
FIXED_PAIRS = 60
MINIMUM_MEAN_JACCARD = 0.82


def test_shipped_model_reaches_the_stated_jaccard(predictor, isic_validation_pairs):
    means, rows = evaluate_pairs(predictor, isic_validation_pairs[:FIXED_PAIRS], samples=10, seed=0)
    assert len(rows) == FIXED_PAIRS
    assert means["jaccard"] >= MINIMUM_MEAN_JACCARD, means


def test_sidecar_states_how_the_model_was_made_and_measured(predictor):
    sidecar = predictor.sidecar
    assert sidecar["training"]["command"].startswith("lesionseg train")
    assert sidecar["evaluation"]["metrics"]["isic2018"]["jaccard"] >= 0.80
    assert sidecar["evaluation"]["metrics"]["isic2018"]["thresholded_jaccard"] >= 0.75
