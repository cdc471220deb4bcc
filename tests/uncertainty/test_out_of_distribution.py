"""The out-of-distribution gate's arithmetic: a Gaussian summary, its distances, the classifier beside
it, their file, and the classifier refitted from what the file keeps."""

import numpy as np
import pytest

from lesionseg.evaluation.out_of_distribution import KEPT_DERMOSCOPY, fit_classifier, fit_gate, refit_classifier
from lesionseg.uncertainty.out_of_distribution import ClassifierFitting, GaussianSummary, OutOfDistributionGate


def test_distances_are_mahalanobis_distances():
    generator = np.random.default_rng(0)
    covariance = np.array([[4.0, 1.0], [1.0, 2.0]])
    features = generator.multivariate_normal([1.0, -2.0], covariance, size=20_000)
    summary = GaussianSummary.fit(features, shrinkage=0.0)
    point = np.array([[3.0, 0.0]])
    offset = point[0] - features.mean(axis=0)
    expected = np.sqrt(offset @ np.linalg.inv(np.cov(features, rowvar=False)) @ offset)
    assert abs(summary.distances(point)[0] - expected) < 1e-9


def test_a_far_point_scores_above_one_and_a_typical_one_below():
    generator = np.random.default_rng(1)
    features = generator.normal(size=(5000, 16))
    summary = GaussianSummary.fit(features)
    threshold = float(np.quantile(summary.distances(generator.normal(size=(1000, 16))), 0.98))
    gate = OutOfDistributionGate(summary, threshold)
    scores = gate.scores(np.vstack([np.zeros(16), np.full(16, 3.0)]))
    assert scores[0] < 1.0 < scores[1]


def separable_features(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(training, held-out, other, other unseen): "others" differ from the domain only along one direction,
    by four of its standard deviations: among 64 dimensions, a distance sees that poorly and a linear
    classifier well."""
    generator = np.random.default_rng(seed)
    domain = generator.normal(size=(4000, 64))
    others = generator.normal(size=(1000, 64)) + np.r_[4.0, np.zeros(63)]
    return domain[:3000], domain[3000:], others[:500], others[500:]


@pytest.mark.slow  # seconds, not milliseconds: the slow tier's, not every change's
def test_the_classifier_catches_what_the_distance_misses_within_the_flagged_share():
    training, held_out, others, unseen_others = separable_features(4)
    distance_only, _ = fit_gate(training, {"held out": held_out}, 0.02)
    both, _ = fit_gate(training, {"held out": held_out}, 0.02, others)
    assert (both.scores(held_out) >= 1.0).mean() <= 0.02 + 1e-9  # the allowance is shared, not doubled
    caught_by_distance = (distance_only.scores(unseen_others) >= 1.0).mean()
    caught_by_both = (both.scores(unseen_others) >= 1.0).mean()
    assert caught_by_distance < 0.5 < 0.9 < caught_by_both


def test_the_statistics_file_round_trips_with_and_without_a_classifier(tmp_path):
    training, held_out, others, probe = separable_features(5)
    for name, (gate, kept) in {
        "distance": fit_gate(training, {"held out": held_out}, 0.02),
        "both": fit_gate(training, {"held out": held_out}, 0.02, others),
    }.items():
        gate.save_statistics(tmp_path / f"{name}.npz", kept)
        loaded = OutOfDistributionGate.load(tmp_path / f"{name}.npz", gate.threshold, gate.classifier_threshold)
        assert (loaded.classifier is None) == (name == "distance")
        assert np.allclose(loaded.scores(probe), gate.scores(probe), rtol=1e-4)
        assert (ClassifierFitting.load(tmp_path / f"{name}.npz") is None) == (name == "distance")


def test_the_file_keeps_a_fixed_sample_of_the_dermoscopy_and_all_the_others_in_float16(tmp_path):
    training, held_out, others, _ = separable_features(5)
    gate, kept = fit_gate(training, {"held out": held_out}, 0.02, others)
    gate.save_statistics(tmp_path / "gate.npz", kept)
    loaded = ClassifierFitting.load(tmp_path / "gate.npz")
    assert len(loaded.dermoscopy) == min(KEPT_DERMOSCOPY, len(training)) and len(loaded.others) == len(others)
    assert loaded.loss_weight == kept.loss_weight > 0
    # float16 keeps 11 significant bits: each number within 2⁻¹¹ of itself, relatively.
    assert np.allclose(loaded.others, others, rtol=2.0**-11, atol=2.0**-24)
    assert np.all(np.isin(loaded.dermoscopy[:, 0], training[:, 0].astype(np.float16)))
    _, again = fit_gate(training, {"held out": held_out}, 0.02, others)
    assert np.array_equal(again.dermoscopy, kept.dermoscopy)  # the same sample every time


def test_a_gate_file_from_before_the_classifier_loads_as_the_distance_alone(tmp_path):
    training, held_out, _, probe = separable_features(6)
    summary = GaussianSummary.fit(training)
    np.savez(tmp_path / "old.npz", mean=summary.mean.astype(np.float32), whitening=summary.whitening.astype(np.float32))
    loaded = OutOfDistributionGate.load(tmp_path / "old.npz", threshold=10.0, classifier_threshold=None)
    assert loaded.classifier is None
    assert np.allclose(loaded.scores(probe), summary.distances(probe) / 10.0, rtol=1e-4)


def test_the_thresholds_bound_the_worst_group_not_the_pooled_rate():
    """A small group shifted away from the rest (another clinic's camera) is flagged at most the allowed share;
    a pooled threshold would flag most of it."""
    training, held_out, others, _ = separable_features(6)
    shifted = np.random.default_rng(7).normal(size=(100, 64)) * 1.3
    groups = {"held out": held_out, "another camera": shifted}
    pooled, _ = fit_gate(training, {"all": np.concatenate([held_out, shifted])}, 0.02, others)
    worst, _ = fit_gate(training, groups, 0.02, others)
    assert (pooled.scores(shifted) >= 1.0).mean() > 0.1
    for features in groups.values():
        assert (worst.scores(features) >= 1.0).mean() <= 0.02 + 1e-9


def test_the_classifiers_score_keeps_ranking_far_out_pictures_and_flags_at_its_line():
    """A probability ratio stops at 1 / P(line); the surprise ratio keeps growing with the logit, and is 1.0 at
    the line, so the same pictures are flagged."""
    training, held_out, others, unseen_others = separable_features(6)
    gate, _ = fit_gate(training, {"held out": held_out}, 0.02, others)
    logits = gate.classifier_threshold + np.array([-5.0, 0.0, 10.0, 20.0, 40.0])
    scores = gate.classifier_scores(logits)
    assert scores[1] == 1.0
    assert np.all(np.diff(scores) > 0)
    # Far above zero softplus(logit) is the logit itself: the score grows linearly, with no ceiling.
    line = np.logaddexp(0.0, gate.classifier_threshold)
    assert scores[-1] == pytest.approx((gate.classifier_threshold + 40.0) / line, rel=1e-9)
    assert scores[-1] > 1.0 + np.exp(-gate.classifier_threshold)  # the old ratio's ceiling, 1 / P(line)
    probabilities = 1.0 / (1.0 + np.exp(-gate.classifier.logits(unseen_others)))
    old_flags = probabilities >= 1.0 / (1.0 + np.exp(-gate.classifier_threshold))
    assert np.array_equal(gate.component_scores(unseen_others)["classifier"] >= 1.0, old_flags)


def test_with_kinds_of_picture_the_classifier_does_not_depend_on_their_order():
    """Folds that hold out whole kinds are the same folds whatever order the pictures are listed in."""
    generator = np.random.default_rng(6)
    dermoscopy = generator.normal(size=(1500, 16))
    offsets = {"documents": 3.0, "textures": 1.5, "photos": 2.0, "artwork": 2.5, "synthetic": 4.0}
    others = np.concatenate(
        [generator.normal(size=(60, 16)) + np.r_[offset, np.zeros(15)] for offset in offsets.values()]
    )
    kinds = np.repeat(list(offsets), 60)
    order = generator.permutation(len(others))
    listed, listed_weight = fit_classifier(dermoscopy, others, kinds)
    shuffled, shuffled_weight = fit_classifier(dermoscopy, others[order], kinds[order])
    assert np.allclose(listed.weights, shuffled.weights, rtol=1e-4, atol=1e-6)
    assert listed_weight == shuffled_weight


def test_the_refit_is_the_optimum_of_the_objective_it_was_fitted_with():
    """Refitted from what it was fitted on, with nothing added, the classifier is its fit's own optimum (as
    scikit-learn's solver converged further gives it): the loss weight the file keeps means what it says."""
    from sklearn.linear_model import LogisticRegression

    training, _, others, _ = separable_features(8)
    classifier, loss_weight = fit_classifier(training, others)
    refitted = refit_classifier(classifier, ClassifierFitting(training, others, loss_weight), training[:1], 0.0)
    features = (np.concatenate([training, others]) - classifier.feature_mean) / classifier.feature_scale
    labels = np.r_[np.zeros(len(training)), np.ones(len(others))]
    converged = LogisticRegression(C=loss_weight * 2 / len(features), class_weight="balanced", tol=1e-10)
    converged.fit(features, labels)
    assert np.allclose(refitted.weights, converged.coef_[0], atol=1e-4)
    assert refitted.bias == pytest.approx(converged.intercept_[0], abs=1e-4)


def test_a_refit_with_a_sites_dermoscopy_lets_the_site_through_and_still_catches_the_others():
    """A site whose camera moves its pictures towards the others along the classifier's direction, and away from
    everything along another: the model's classifier flags about half of them. Moving its line until the site
    passes catches few of the others; refitted with a hundred of the site's pictures as dermoscopy, and its line
    set on a hundred more, it passes the site's next hundred and still catches the others."""
    training, held_out, others, unseen_others = separable_features(9)
    gate, kept = fit_gate(training, {"held out": held_out}, 0.02, others)
    site = np.random.default_rng(10).normal(size=(300, 64)) + np.r_[2.5, 5.0, np.zeros(62)]
    fitted, lining, next_ones = site[:100], site[100:200], site[200:]
    assert (gate.classifier.logits(site) >= gate.classifier_threshold).mean() > 0.4
    moved_line = np.quantile(gate.classifier.logits(lining), 0.98)
    refitted = refit_classifier(gate.classifier, kept, fitted, 0.5)
    line = np.quantile(refitted.logits(lining), 0.98)
    # The line is the 98th of 100 exchangeable scores, which a new one passes with probability Beta(3, 98):
    # 11 or more of the next hundred over it happens less than 1 % of the time.
    assert (refitted.logits(next_ones) >= line).mean() <= 0.10
    caught_by_moving = (gate.classifier.logits(unseen_others) >= moved_line).mean()
    assert caught_by_moving < 0.5 < 0.9 < (refitted.logits(unseen_others) >= line).mean()
