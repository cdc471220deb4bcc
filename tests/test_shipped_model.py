"""The embedded default model, judged on real ISIC pairs it never trained on, at their own size."""

import pytest

from lesionseg.data.pairs import discover_pairs
from lesionseg.data.splits import Split
from lesionseg.evaluation.evaluate import evaluate_pairs


@pytest.mark.slow
def test_the_recorded_isic_test_numbers_are_measured_again(predictor, data_root):
    """The sidecar's headline numbers are re-measured, pair for pair, on the test split it names: a
    sidecar edited by hand, or recorded from another model or split, fails here."""
    recorded = predictor.sidecar.entry("evaluation")
    assert recorded["split"] == "test"
    records = Split.of_model(predictor.sidecar.training).select(discover_pairs(data_root / "isic2018"), "test")
    assert len(records) == recorded["pairs"]["isic2018"]
    means, _ = evaluate_pairs(
        predictor, records, samples=recorded["samples"], seed=recorded["seed"], tta=recorded["tta"]
    )
    for name, value in recorded["metrics"]["isic2018"].items():
        assert means[name] == pytest.approx(value, abs=1e-6), name


def test_sidecar_states_how_the_model_was_made_and_measured(predictor):
    sidecar = predictor.sidecar
    assert sidecar.training["command"].startswith("lesionseg train")
    assert sidecar.entry("evaluation")["metrics"]["isic2018"]["jaccard"] >= 0.80
    assert sidecar.entry("evaluation")["metrics"]["isic2018"]["thresholded_jaccard"] >= 0.72
