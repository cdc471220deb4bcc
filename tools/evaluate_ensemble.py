"""Scores an ensemble of checkpoints as `lesionseg evaluate` scores one: each member's served prediction (MC
dropout with flips, at its own size), their mean probability thresholded at one half, on the split the members
were trained with. It writes `lesionseg evaluate --output`'s per-image rows, so `tools/compare_evaluations.py`
pairs it with any single model's evaluation.

An ensemble is a candidate that costs one network per member; its one-network form is distillation
(`lesionseg train --teachers A B C`). This measures whether the ensemble is worth distilling.

    python tools/evaluate_ensemble.py src/lesionseg/weights/default.safetensors runs/a/best.safetensors \\
        runs/b/best.safetensors --split validation --output runs/eval-ensemble.json
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg.data.pairs import read_image, read_truth
from lesionseg.data.splits import Split, select_pairs
from lesionseg.defaults import DEFAULT_SAMPLES, DEFAULT_THRESHOLD
from lesionseg.evaluation.evaluate import format_table
from lesionseg.evaluation.metrics import mean_scores, score_masks
from lesionseg.predictor import Predictor


def shared_pairs(members: list[Predictor], data_root: Path, set_name: str, split_name: str, limit: int) -> list:
    """The set's pairs that are in `split_name` for every member, in the first member's order. Members trained with
    other splits (the shipped model's predates grouping near-duplicates) leave out the pairs any of them trained
    on, so no member is scored on what it saw; the count left out is printed."""
    selections = [
        select_pairs(data_root, set_name, split_name, Split.of_model(member.sidecar.training)) for member in members
    ]
    everyone = set.intersection(*({record.identifier for record in selection} for selection in selections))
    shared = [record for record in selections[0] if record.identifier in everyone]
    left_out = len(set.union(*({record.identifier for record in selection} for selection in selections))) - len(shared)
    if left_out:
        print(f"{set_name}: {left_out} {split_name} pairs left out, not in every member's {split_name} split")
    return shared[: limit or None]


def ensemble_rows(members: list[Predictor], records: list, samples: int, seed: int) -> tuple[dict, list[dict]]:
    """The pairs' mean scores and one row per pair, each member predicting at its own input size."""
    rows, scores = [], []
    for record in tqdm(records, desc=f"evaluating {records[0].source if records else ''}", unit="image"):
        rgb, truth = read_image(record.image_path), read_truth(record.mask_path)
        probability = np.mean(
            [member.predict(rgb, samples=samples, seed=seed, tta=True).mean_probability for member in members], axis=0
        )
        score = score_masks(probability >= DEFAULT_THRESHOLD, truth)
        scores.append(score)
        rows.append({"id": record.identifier, **score.to_dict()})
    return mean_scores(scores), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, nargs="+", help="two or more checkpoints")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sets", nargs="+", default=["isic2018", "ham10000"])
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pairs of each set")
    parser.add_argument("--output", type=Path, default=Path("runs/evaluation-ensemble.json"))
    arguments = parser.parse_args()
    if len(arguments.weights) < 2:
        parser.error("an ensemble takes two or more checkpoints")
    members = [Predictor.from_checkpoint(path, "pytorch") for path in arguments.weights]
    results, counts, per_image = {}, {}, {}
    for set_name in arguments.sets:
        records = shared_pairs(members, arguments.data_root, set_name, arguments.split, arguments.limit)
        results[set_name], per_image[set_name] = ensemble_rows(members, records, arguments.samples, arguments.seed)
        counts[set_name] = len(records)
    print(format_table(results, counts))
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "members": [
            {"path": str(path), "sha256": member.sidecar.sha256}
            for path, member in zip(arguments.weights, members, strict=True)
        ],
        "split": arguments.split,
        "samples": arguments.samples,
        "seed": arguments.seed,
        "tta": True,
        "pairs": counts,
        "metrics": results,
        "per_image": per_image,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"report: {arguments.output}")


if __name__ == "__main__":
    main()
