"""A real (tiny) training run on real pairs: it learns, logs, keeps the best, and resumes."""

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

from lesionseg.model.checkpoint import load_checkpoint
from lesionseg.training.loop import TrainingOptions, selection_jaccard, train


def tiny_options(data_root, output_directory, epochs):
    return TrainingOptions(
        data_root=data_root,
        sets=("isic2018", "ham10000"),
        output_directory=output_directory,
        epochs=epochs,
        samples_per_epoch=32,
        batch_size=8,
        limit_pairs=40,
        held_out_fraction=0.3,  # of 40 pairs, enough for a validation split
        # The workers are tested where users start training: `lesionseg train` in a process of its own
        # (tests/training/test_distributed.py, tests/reviews/test_cases_http.py).
        loader_workers=0,
        checkpoint_every=2,
        command=["test"],
    )


def train_in_a_fresh_process(options: TrainingOptions):
    """`train(options)` in a new interpreter, as `lesionseg train` runs. The test process has by now filled itself
    with other tests' ONNX Runtime, OpenVINO and PyTorch thread pools; training in it crashed the interpreter
    (a segmentation fault, killing the whole run) once in several full runs here, never in a process of its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(train, options).result()


@pytest.mark.slow
def test_training_runs_logs_and_resumes(data_root, tmp_path):
    best = train_in_a_fresh_process(tiny_options(data_root, tmp_path, epochs=1))
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1]
    assert "isic2018_jaccard" in log[0] and "ham10000_jaccard" in log[0]
    assert (tmp_path / "log.csv").read_text().startswith("epoch,")
    model, sidecar = load_checkpoint(best)
    assert sidecar.training["data"]["training_pairs"] > 0

    # Asking for a second epoch resumes from state.pt instead of starting again.
    train_in_a_fresh_process(tiny_options(data_root, tmp_path, epochs=2))
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1, 2]
    assert log[1]["train_loss"] < log[0]["train_loss"]  # it learns: the second epoch fits better than the first


def test_the_best_checkpoint_is_chosen_on_the_set_or_the_mean_asked_for(tmp_path):
    row = {"isic2018_jaccard": 0.80, "ham10000_jaccard": 0.70}
    chosen = {
        select_on: selection_jaccard(row, TrainingOptions(output_directory=tmp_path, select_on=select_on))
        for select_on in ("auto", "mean", "ham10000")
    }
    assert chosen == {"auto": 0.80, "mean": pytest.approx(0.75), "ham10000": 0.70}
    # auto, on a clinic's own export alone: its own pairs choose.
    own = TrainingOptions(output_directory=tmp_path, sets=("reviewed",))
    assert selection_jaccard({"reviewed_jaccard": 0.6}, own) == 0.6
    with pytest.raises(ValueError, match="--select-on must be auto, mean or one of the sets"):
        TrainingOptions(output_directory=tmp_path, select_on="isic")
