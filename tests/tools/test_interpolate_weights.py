"""`tools/interpolate_weights.py` (WiSE-FT) on the shipped checkpoint: the ends of the line are the two models,
the middle is their mean, and the result loads as a checkpoint with the first one's calibration."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.checkpoint import load_checkpoint, save_checkpoint
from lesionseg.model.sidecar import config_from_sidecar

# Slow tier (`make test-fast` leaves it out): the tool runs in its own process, three times.
pytestmark = pytest.mark.slow

TOOL = Path(__file__).parents[2] / "tools" / "interpolate_weights.py"


def test_interpolation_runs_from_the_first_model_to_the_second(tmp_path):
    first, sidecar = load_checkpoint(DEFAULT_WEIGHTS)
    shifted = {
        name: tensor + 1 if tensor.is_floating_point() else tensor for name, tensor in first.state_dict().items()
    }
    second, _ = load_checkpoint(DEFAULT_WEIGHTS)
    second.load_state_dict(shifted)
    second_path = tmp_path / "second.safetensors"
    save_checkpoint(second, config_from_sidecar(sidecar), second_path, {"training": sidecar.training})
    outputs = {}
    for alpha in ("0", "0.5", "1"):
        output = tmp_path / f"alpha{alpha}.safetensors"
        subprocess.run(
            [
                sys.executable,
                str(TOOL),
                str(DEFAULT_WEIGHTS),
                str(second_path),
                "--alpha",
                alpha,
                "--output",
                str(output),
            ],
            check=True,
            capture_output=True,
        )
        outputs[alpha], outputs[alpha + " sidecar"] = load_checkpoint(output)
    name = next(name for name, tensor in shifted.items() if tensor.is_floating_point())
    start = first.state_dict()[name]
    assert torch.equal(outputs["0"].state_dict()[name], start)
    assert torch.allclose(outputs["0.5"].state_dict()[name], start + 0.5)
    assert torch.allclose(outputs["1"].state_dict()[name], start + 1)
    assert outputs["0.5 sidecar"].calibration == sidecar.calibration
    assert outputs["0.5 sidecar"].entry("interpolation")["alpha"] == 0.5
