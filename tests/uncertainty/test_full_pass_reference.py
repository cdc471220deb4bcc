import numpy as np
import pytest

from lesionseg.data.pairs import read_image
from lesionseg.imaging.preprocess import normalise, resize_to_square
from lesionseg.uncertainty.full_pass_reference import full_pass_logits
from lesionseg.uncertainty.sampling import sample_logits, summarise


@pytest.fixture(scope="module")
def real_batch(predictor, isic_validation_pairs):
    size = predictor.input_size
    squares = [resize_to_square(read_image(record.image_path), size) for record in isic_validation_pairs[:2]]
    return normalise(np.stack(squares), predictor.config.mean, predictor.config.std)


def sample_mc_dropout(predictor, images, samples, seed):
    return summarise(sample_logits(predictor.backend, predictor.config, images, samples, seed))


def test_same_seed_gives_the_same_maps(predictor, real_batch):
    first = sample_mc_dropout(predictor, real_batch, samples=10, seed=7)
    second = sample_mc_dropout(predictor, real_batch, samples=10, seed=7)
    assert np.array_equal(first.mean_probability, second.mean_probability)
    assert np.array_equal(first.uncertainty_std, second.uncertainty_std)


def test_different_seeds_give_different_samples(predictor, real_batch):
    first = sample_mc_dropout(predictor, real_batch, samples=10, seed=1)
    second = sample_mc_dropout(predictor, real_batch, samples=10, seed=2)
    assert not np.array_equal(first.uncertainty_std, second.uncertainty_std)


def test_more_samples_converge_to_the_same_mean(predictor, real_batch):
    few = sample_mc_dropout(predictor, real_batch, samples=16, seed=3)
    many = sample_mc_dropout(predictor, real_batch, samples=64, seed=4)
    assert np.abs(few.mean_probability - many.mean_probability).mean() < 0.02


def test_the_trunk_runs_once_however_many_samples(predictor, real_batch):
    calls = []
    handle = predictor.backend.model.encoder.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].shape[0])
    )
    try:
        sample_mc_dropout(predictor, real_batch, samples=30, seed=0)
    finally:
        handle.remove()
    assert calls == [real_batch.shape[0]]


@pytest.mark.slow  # ten whole forward passes at full size: the slow tier's, not every change's
def test_batched_tail_equals_full_forward_passes_with_the_same_masks(predictor, real_batch):
    cheap = sample_logits(predictor.backend, predictor.config, real_batch, samples=10, seed=11)
    full = full_pass_logits(predictor.backend.model, predictor.config, real_batch, samples=10, seed=11)
    assert np.allclose(cheap, full, atol=1e-4)
    assert np.array_equal(summarise(cheap).mean_probability >= 0.5, summarise(full).mean_probability >= 0.5)


def test_batchnorm_stays_in_inference_mode(predictor, real_batch):
    model = predictor.backend.model
    statistics = {name: buffer.clone() for name, buffer in model.named_buffers() if "running" in name}
    sample_mc_dropout(predictor, real_batch, samples=8, seed=0)
    assert not model.training
    for name, buffer in model.named_buffers():
        if name in statistics:
            assert buffer.equal(statistics[name]), name


def test_maps_are_probabilities_with_bounded_spread(predictor, real_batch):
    maps = sample_mc_dropout(predictor, real_batch, samples=10, seed=0)
    assert maps.mean_probability.shape == (2, predictor.input_size, predictor.input_size)
    assert 0 <= maps.mean_probability.min() and maps.mean_probability.max() <= 1
    assert 0 <= maps.uncertainty_std.min() and maps.uncertainty_std.max() <= 0.5
    assert 0 <= maps.predictive_entropy.min() and maps.predictive_entropy.max() <= 1.0 + 1e-6


def test_one_sample_has_no_spread(predictor, real_batch):
    maps = sample_mc_dropout(predictor, real_batch, samples=1, seed=0)
    assert np.abs(maps.uncertainty_std).max() == 0


@pytest.mark.parametrize("samples", [0, 65])
def test_sample_count_is_bounded(predictor, real_batch, samples):
    with pytest.raises(ValueError, match="between 1 and 64"):
        sample_mc_dropout(predictor, real_batch, samples=samples, seed=0)
