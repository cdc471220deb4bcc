"""A real (tiny) training run on real pairs: it learns, logs, keeps the best, and resumes."""

import json

import pytest

from lesionseg.model.checkpoint import load_checkpoint
from lesionseg.training.data import discover_pairs, split_pairs
from lesionseg.training.loop import TrainingOptions, train


def tiny_options(data_root, output_directory, epochs):
    return TrainingOptions(
        data_root=data_root,
        sets=("isic2018", "ham10000"),
        output_directory=output_directory,
        epochs=epochs,
        samples_per_epoch=32,
        batch_size=8,
        limit_pairs=40,
        checkpoint_every=2,
        command=["test"],
    )


def test_training_runs_logs_and_resumes(data_root, tmp_path):
    best = train(tiny_options(data_root, tmp_path, epochs=1))
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1]
    assert "isic2018_jaccard" in log[0] and "ham10000_jaccard" in log[0]
    assert (tmp_path / "log.csv").read_text().startswith("epoch,")
    model, sidecar = load_checkpoint(best)
    assert sidecar["training"]["data"]["training_pairs"] > 0

    # Asking for a second epoch resumes from state.pt instead of starting again.
    train(tiny_options(data_root, tmp_path, epochs=2))
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1, 2]
    assert log[1]["train_loss"] < log[0]["train_loss"]  # it learns: the second epoch fits better than the first


def test_ham10000_split_never_puts_one_lesion_on_both_sides(data_root):
    training, validation = split_pairs(discover_pairs(data_root / "ham10000"), validation_fraction=0.1)
    assert {r.group for r in training}.isdisjoint({r.group for r in validation})
    assert 0.05 < len(validation) / (len(training) + len(validation)) < 0.15


def test_isic_split_is_by_image_and_stable(data_root):
    records = discover_pairs(data_root / "isic2018")
    first = split_pairs(records, validation_fraction=0.1)
    second = split_pairs(list(reversed(records)), validation_fraction=0.1)
    assert {r.identifier for r in first[1]} == {r.identifier for r in second[1]}
    assert all(r.group == r.identifier for r in records)


@pytest.mark.parametrize("set_name", ["isic2018", "ham10000"])
def test_every_pair_has_an_image_and_a_mask(data_root, set_name):
    records = discover_pairs(data_root / set_name)
    assert len(records) > 2000
    assert all(r.mask_path.name == f"{r.identifier}_segmentation.png" for r in records)
