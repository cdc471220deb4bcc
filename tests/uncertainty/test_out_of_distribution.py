"""The out-of-distribution gate's arithmetic: a Gaussian summary, its distances, its file."""

import numpy as np

from lesionseg.uncertainty.out_of_distribution import GaussianSummary, OutOfDistributionGate


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


def test_the_statistics_file_round_trips(tmp_path):
    summary = GaussianSummary.fit(np.random.default_rng(2).normal(size=(500, 8)))
    summary.save(tmp_path / "gate.npz")
    loaded = GaussianSummary.load(tmp_path / "gate.npz")
    probe = np.random.default_rng(3).normal(size=(10, 8))
    assert np.allclose(loaded.distances(probe), summary.distances(probe), rtol=1e-5)
