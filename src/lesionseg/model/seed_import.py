"""`lesionseg import-seed`: the seed's published checkpoint (a pickled state_dict of its SwinTinyUPerNet)
into our safetensors and sidecar, tensor for tensor.

The seed's encoder is timm's Swin-T with `features_only`, whose key names depend on the timm version that
saved it: `layers_0.` (timm 0.9 and later), `layers.0.`, or under `model.` when timm wrapped it. All map
onto ours. Buffers that newer timm rebuilds instead of storing (`relative_position_index`, `attn_mask`)
are dropped by name; anything else that does not match is refused, naming the keys.
"""

import re
import sys
from pathlib import Path

import torch

from lesionseg.model.checkpoint import mismatched_keys, save_checkpoint
from lesionseg.model.config import get_config
from lesionseg.model.factory import create_model
from lesionseg.model.sidecar import CheckpointError, Sidecar, file_sha256

SEED_MODEL = "seed_swin_upernet"
REBUILT_BUFFERS = ("relative_position_index", "attn_mask")


def read_seed_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: tensors and plain containers only; a pickle that asks for more is refused.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated, foreign or unsafe files
        raise CheckpointError(f"{path.name} is not a readable PyTorch state_dict ({type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} is not a state_dict of tensors")
    return state


def our_name(seed_name: str) -> str:
    """The seed's key -> ours: the encoder sits in `encoder.backbone`, its stages are `layers_N`."""
    if not seed_name.startswith("encoder."):
        return seed_name
    name = seed_name.removeprefix("encoder.").removeprefix("model.")
    return "encoder.backbone." + re.sub(r"^layers\.(\d+)\.", r"layers_\1.", name)


def import_seed(source: Path, output: Path) -> Sidecar:
    """Writes `output` (.safetensors) and its sidecar; returns the sidecar."""
    source, output = Path(source), Path(output)
    state = read_seed_state(source)
    dropped = sorted(name for name in state if name.endswith(REBUILT_BUFFERS))
    mapped = {our_name(name): tensor for name, tensor in state.items() if name not in dropped}
    config = get_config(SEED_MODEL)
    model = create_model(config)
    missing, unexpected, mismatched = mismatched_keys(model.state_dict(), mapped)
    if missing or unexpected or mismatched:
        problems = [
            f"{len(names)} {label}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", mismatched))
            if names
        ]
        raise CheckpointError(f"{source.name} is not the seed's Swin-T UPerNet: " + "; ".join(problems))
    model.load_state_dict({name: tensor.float() for name, tensor in mapped.items()}, strict=True)
    provenance = {
        "imported_from": "the seed: samyakshrestha/medical-segmentation-api (SwinTinyUPerNet state_dict)",
        "source_file": source.name,
        "source_sha256": file_sha256(source),
        "dropped_buffers": len(dropped),
        "command": " ".join(["lesionseg", *sys.argv[1:]]),
    }
    return save_checkpoint(model.eval(), config, output, metadata={"provenance": provenance})
