"""Batch throughput: the local engine against Ray Data on a local cluster, same images, same run.

    python benchmarks/batch.py --images 200

Prints a table (images/s, their ratio, masks that differ) and writes JSON. Each rate includes its
engine's start-up (model loading; for Ray also starting the local cluster and its actors, ~10 s),
which weighs on Ray in short runs. Ray Data hands results back in bursts, so a rate between the
first result and the last would flatter it; only whole runs are compared.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "benchmarks"))
from batch_fault import link_images  # noqa: E402


def run_engine(engine: str, input_folder: Path, output: Path) -> dict:
    command = [str(Path(sys.executable).parent / "lesionseg"), "batch", str(input_folder), str(output)]
    subprocess.run([*command, "--engine", engine], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((output / "summary.json").read_text())


def differing_masks(first: Path, second: Path) -> int:
    differing = 0
    for mask in sorted((first / "masks").iterdir()):
        if not np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(second / "masks" / mask.name))):
            differing += 1
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--set", default="isic2018")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--output", type=Path, default=REPOSITORY / "runs" / "benchmark-batch.json")
    arguments = parser.parse_args()

    images = sorted((arguments.data_root / arguments.set / "images").glob("*.jpg"))[: arguments.images]
    results = {"cpu_cores": os.cpu_count(), "images": len(images)}
    with tempfile.TemporaryDirectory() as workspace:
        input_folder = link_images(images, Path(workspace) / "input")
        for engine in ("local", "ray"):
            results[engine] = run_engine(engine, input_folder, Path(workspace) / engine)
        results["differing_masks"] = differing_masks(Path(workspace) / "local", Path(workspace) / "ray")
    local, ray = results["local"], results["ray"]
    results["ratio"] = round(ray["images_per_second"] / local["images_per_second"], 3)
    print(f"{len(images)} images from {arguments.set}, {os.cpu_count()} CPU cores\n")
    print("| engine | ok | failed | seconds | images/s |")
    print("|---|---:|---:|---:|---:|")
    for engine in ("local", "ray"):
        row = results[engine]
        print(f"| {engine} | {row['ok']} | {row['failed']} | {row['seconds']} | {row['images_per_second']} |")
    print(
        f"\nray / local: {results['ratio']}× (target ≥ 0.9×);"
        f" masks that differ: {results['differing_masks']} of {len(images)}"
    )
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
