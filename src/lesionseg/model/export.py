"""Export to ONNX: the trunk and the sampled tail as two graphs, the dropout masks as inputs.

Masks stay outside the graph so a seed reproduces a result on either backend; both batch axes are
dynamic, so the tail takes each image's trunk once and all MC samples' masks in one run.
"""

from pathlib import Path

import torch
from torch import nn

from lesionseg.model.checkpoint import load_checkpoint
from lesionseg.model.network import SegmentationNetwork
from lesionseg.model.sidecar import DESCRIPTOR_OUTPUT, config_from_sidecar, file_sha256, onnx_paths, update_sidecar

OPSET = 18


class TrunkGraph(nn.Module):
    def __init__(self, model: SegmentationNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels, descriptor = self.model.forward_trunk_and_descriptor(image)
        return (*levels, descriptor)


class TailGraph(nn.Module):
    def __init__(self, model: SegmentationNetwork, trunk_count: int, input_size: int) -> None:
        super().__init__()
        self.model = model
        self.trunk_count = trunk_count
        self.input_size = input_size

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        trunk, masks = list(inputs[: self.trunk_count]), list(inputs[self.trunk_count :])
        return self.model.forward_samples(trunk, (self.input_size, self.input_size), masks)


def export_onnx(weights_path: Path) -> dict:
    """Writes WEIGHTS.trunk.onnx and WEIGHTS.tail.onnx and records their sha256 in the sidecar."""
    model, sidecar = load_checkpoint(weights_path)
    size = sidecar.architecture["input_size"]
    # The tail is traced on two images of three samples each, so that neither of its batch axes is taken for a
    # constant 1 or for the other; the trunk, with one batch axis, on one image as it always was.
    image = torch.zeros(2, 3, size, size)
    with torch.inference_mode():
        trunk = model.forward_trunk(image)
    masks = [torch.ones(6, channels, 1, 1) for channels in config_from_sidecar(sidecar).mask_channels]
    trunk_path, tail_path = onnx_paths(weights_path)
    trunk_names = [f"trunk_{index}" for index in range(len(trunk))]
    mask_names = [f"mask_{index}" for index in range(len(masks))]
    batch = torch.export.Dim("batch", min=1, max=4096)
    rows = torch.export.Dim("rows", min=1, max=4096 * 64)  # images × samples
    torch.onnx.export(
        TrunkGraph(model).eval(),
        (image[:1],),
        str(trunk_path),
        input_names=["image"],
        output_names=[*trunk_names, DESCRIPTOR_OUTPUT],
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
    )
    torch.onnx.export(
        TailGraph(model, len(trunk), size).eval(),
        (*trunk, *masks),
        str(tail_path),
        input_names=[*trunk_names, *mask_names],
        output_names=["logits"],
        # One entry: the *inputs tuple.
        dynamic_shapes=(tuple({0: batch} for _ in trunk) + tuple({0: rows} for _ in masks),),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
    )
    record = {
        "opset": OPSET,
        "torch_version": torch.__version__,
        # The graphs belong to these weights: a sidecar copied onto other weights cannot serve them.
        "weights_sha256": sidecar.sha256,
        "trunk": {"file": trunk_path.name, "sha256": file_sha256(trunk_path)},
        "tail": {"file": tail_path.name, "sha256": file_sha256(tail_path)},
        # Graphs exported by 0.5.0 and earlier took the trunk repeated once per sample (see `tail_repeats_trunk`).
        "tail_takes_trunk_once": True,
    }
    update_sidecar(weights_path, "onnx", record)
    return record
