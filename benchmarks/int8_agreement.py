"""Does the int8 trunk give float32's masks on this CPU? Mask agreement of each lower-precision backend with
ONNX Runtime in float32, on held-out ISIC images, whatever this CPU's instruction set.

    python benchmarks/int8_agreement.py [--images 20] [--int8-trunk OTHER.int8.onnx]

Prints, per backend, the largest and mean share of an image's mask pixels that differ from float32, and the
farthest a differing pixel lies from float32's boundary in cells of the decoder's stride-4 grid (the
tests' bound is 2). `--int8-trunk` measures another quantised graph (copied beside a copy of the weights)."""

import argparse
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import discover_pairs, read_image
from lesionseg.data.splits import Split
from lesionseg.model.sidecar import file_sha256, read_sidecar, update_sidecar
from lesionseg.predictor import Predictor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.backends.mask_agreement import farthest_disagreement_in_cells  # noqa: E402


def weights_with_int8_trunk(int8_trunk: Path, folder: Path) -> Path:
    """A copy of the embedded model whose int8 trunk is `int8_trunk`."""
    for path in DEFAULT_WEIGHTS.parent.glob("default.*"):
        shutil.copy(path, folder / path.name)
    weights = folder / DEFAULT_WEIGHTS.name
    record = read_sidecar(weights).entry("onnx_int8")
    shutil.copy(int8_trunk, folder / record["trunk"]["file"])
    update_sidecar(weights, "onnx_int8", {**record, "trunk": {**record["trunk"], "sha256": file_sha256(int8_trunk)}})
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--int8-trunk", type=Path)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        weights = (
            weights_with_int8_trunk(arguments.int8_trunk, Path(folder)) if arguments.int8_trunk else DEFAULT_WEIGHTS
        )
        split = Split.of_model(read_sidecar(weights).training)
        records = split.select(discover_pairs(arguments.data_root / "isic2018"), "held-out")[: arguments.images]
        reference = Predictor.from_checkpoint(weights, "onnx")
        print(f"CPU: {platform.processor() or platform.machine()}; {len(records)} held-out ISIC images, 6 samples")
        print("| backend | largest share of mask pixels changed | mean share | farthest from the boundary (cells) |")
        print("|---|---:|---:|---:|")
        for backend in ("onnx-int8", "openvino-int8"):
            try:
                predictor = Predictor.from_checkpoint(weights, backend)
            except ModuleNotFoundError:
                continue
            shares, farthest = [], 0.0
            for record in records:
                rgb = read_image(record.image_path)
                expected = reference.predict(rgb, samples=6, seed=0).mask
                found = predictor.predict(rgb, samples=6, seed=0).mask
                shares.append(float((expected != found).mean()))
                farthest = max(farthest, farthest_disagreement_in_cells(expected, found, reference.input_size))
            print(f"| {backend} | {max(shares):.2%} | {np.mean(shares):.2%} | {farthest:.2f} |")


if __name__ == "__main__":
    main()
