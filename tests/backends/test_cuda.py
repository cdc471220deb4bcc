"""The PyTorch backend on a CUDA GPU (bfloat16 autocast) against the same backend on the CPU, on real images;
and the device setting's errors, wherever this runs. The GPU tests skip, saying why, without one."""

import os
import subprocess
import sys

import pytest
import torch
from tests.backends.mask_agreement import BOUNDARY_CELLS, farthest_disagreement_in_cells
from tests.conftest import free_port

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import read_image
from lesionseg.predictor import Predictor, choose_backend

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch here")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the refusal cannot happen")


@needs_cuda
def test_cuda_masks_differ_from_the_cpus_only_along_the_boundary(isic_validation_pairs):
    """bfloat16 keeps 8 bits of mantissa: a logit near zero may change sign, which moves the boundary by about
    a cell of the decoder's grid (tests/backends/mask_agreement.py); a fault would flip pixels far from it."""
    on_cpu = Predictor.from_checkpoint(DEFAULT_WEIGHTS, "pytorch", device="cpu")
    on_gpu = Predictor.from_checkpoint(DEFAULT_WEIGHTS, "pytorch", device="cuda")
    assert on_gpu.backend_choice["device"] == "cuda:0"
    assert on_gpu.backend_choice["precision"] in ("bfloat16", "float16")
    for record in isic_validation_pairs[:12]:
        rgb = read_image(record.image_path)
        expected = on_cpu.predict(rgb, samples=10, seed=0, tta=True)
        found = on_gpu.predict(rgb, samples=10, seed=0, tta=True)
        distance = farthest_disagreement_in_cells(expected.mask, found.mask, on_cpu.input_size)
        assert distance <= BOUNDARY_CELLS, record.identifier
        assert found.out_of_distribution == expected.out_of_distribution


def lesionseg(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
    )


@without_cuda
@pytest.mark.slow
def test_asking_for_cuda_without_a_gpu_fails_in_one_line(real_image_path, tmp_path):
    """Every command that runs the model honours the device, asked for by flag or by LESIONSEG_DEVICE: the
    evaluation and calibration commands too, before they read a pair."""
    commands = (
        ["predict", str(real_image_path), "--out", str(tmp_path)],
        ["batch", str(tmp_path), "out"],
        ["evaluate", "--limit", "1", "--output", str(tmp_path / "evaluation.json")],
        ["calibrate-coverage"],
        ["info"],
    )
    for command in commands:
        for failed in (lesionseg(*command, "--device", "cuda"), lesionseg(*command, LESIONSEG_DEVICE="cuda")):
            assert failed.returncode == 2 and "Traceback" not in failed.stderr, command
            assert len(failed.stderr.strip().splitlines()) == 1 and "--device cuda" in failed.stderr, command


@pytest.mark.slow
def test_a_wrong_device_names_its_setting_in_one_line(real_image_path, tmp_path):
    served = lesionseg("serve", "--port", str(free_port()), LESIONSEG_DEVICE="gpu")
    assert served.returncode == 2 and served.stderr.strip().splitlines() == [served.stderr.strip()]
    assert "LESIONSEG_DEVICE" in served.stderr and "'gpu'" in served.stderr
    flagged = lesionseg("predict", str(real_image_path), "--out", str(tmp_path), "--device", "cuda:x")
    assert flagged.returncode == 2 and "--device" in flagged.stderr and "cuda:N" in flagged.stderr
    arguments = ["predict", str(real_image_path), "--out", str(tmp_path), "--device", "cuda", "--backend", "onnx"]
    on_onnx = lesionseg(*arguments)
    assert on_onnx.returncode == 2 and "only the PyTorch backend runs on a GPU" in on_onnx.stderr


def test_auto_keeps_the_cpu_where_no_gpu_is_visible_and_says_where_it_runs():
    if torch.cuda.is_available():
        assert choose_backend("auto", DEFAULT_WEIGHTS, "auto")["name"] == "pytorch"
        return
    assert choose_backend("auto", DEFAULT_WEIGHTS, "auto")["name"] == "onnx"
    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS, "pytorch", device="auto")
    assert predictor.backend_choice["device"] == "cpu" and predictor.backend_choice["precision"] == "float32"
    with pytest.raises(ValueError, match="--device cpu"):
        choose_backend("onnx", DEFAULT_WEIGHTS, "cuda:1")


def test_the_devices_summary_is_numpys_summary_of_the_pooled_views(real_image_path):
    """What a GPU serves (`sample_maps`: the views pooled and summarised where the logits are) against what
    every other backend serves (`summarise(pooled_views(logits))` in NumPy), here on the CPU, where torch and
    NumPy differ only by float32 rounding (1e-6 on a probability)."""
    from lesionseg.backends.pytorch_backend import summary_of_views
    from lesionseg.predictor import flipped_views, pooled_views
    from lesionseg.uncertainty.sampling import draw_channel_masks, summarise

    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS, "pytorch", device="cpu")
    batch = predictor.model_input(read_image(real_image_path))
    for views, images in ((1, batch), (3, flipped_views(batch))):
        trunk, _ = predictor.backend.trunk(images)
        masks = draw_channel_masks(predictor.config, views * 7, seed=3)
        logits = predictor.backend.tail(trunk, masks).reshape(views, 7, *batch.shape[-2:])
        expected = summarise(pooled_views(logits) if views == 3 else logits, temperature=1.3)
        found = predictor.backend.sample_maps(trunk, masks, views, temperature=1.3)
        for name in ("mean_probability", "uncertainty_std", "predictive_entropy"):
            assert getattr(found, name).shape == getattr(expected, name).shape == (1, *batch.shape[-2:])
            assert abs(getattr(found, name) - getattr(expected, name)).max() < 1e-5, name
    # Extreme logits: the clip at ±30 keeps both finite and equal.
    extreme = torch.tensor([[[[-80.0, 80.0]]] * 4]).reshape(1, 4, 1, 2)
    mean, _, entropy = summary_of_views(extreme, 1.0)
    assert torch.isfinite(entropy).all() and mean[0, 0, 1] == 1.0


@needs_cuda
def test_cuda_graphs_replay_what_the_eager_runs_give(isic_validation_pairs):
    """The same kernels (cuDNN's choice is kept by shape), launched as one graph, each replay with its own input:
    the masks agree with the eager run's but for bfloat16's rounding along the boundary, as the GPU's with the
    CPU's do; a replay that handed back another request's maps would miss by far more. The shapes alternate
    (10 samples with TTA, 3 without), so each graph is replayed after the other's."""
    from lesionseg.backends.pytorch_backend import TorchBackend
    from lesionseg.model.checkpoint import load_checkpoint

    eager = Predictor.from_checkpoint(DEFAULT_WEIGHTS, "pytorch", device="cuda")
    model, sidecar = load_checkpoint(DEFAULT_WEIGHTS)
    backend = TorchBackend(model, sidecar.architecture["input_size"], device="cuda", cuda_graphs=True)
    graphed = Predictor(backend, sidecar, 1, eager.gate, eager.backend_choice)
    assert backend.placement["cuda_graphs"] == "trunk and summary"
    for record in isic_validation_pairs[:6]:
        rgb = read_image(record.image_path)
        for samples, tta in ((10, True), (3, False)):
            expected = eager.predict(rgb, samples=samples, seed=1, tta=tta)
            found = graphed.predict(rgb, samples=samples, seed=1, tta=tta)
            distance = farthest_disagreement_in_cells(expected.mask, found.mask, eager.input_size)
            assert distance <= BOUNDARY_CELLS, (record.identifier, samples)
            assert found.out_of_distribution == expected.out_of_distribution
    assert len(backend.trunk_graphs.graphs) == 2  # a trunk of 3 views and one of 1
