"""Compares two models pair for pair: reads two `lesionseg evaluate --output` files and, on the images both
scored, prints each set's mean of each metric, the mean difference (second minus first) with its paired
standard error, and how many images each model fails (Jaccard under the challenge's 0.65).

Pairing matters: two models' means on a hundred images differ by noise of about 0.005 Jaccard, and most of it
comes from which images are hard, which pairing cancels.

    python tools/compare_evaluations.py runs/evaluation-old.json runs/evaluation-new.json
"""

import argparse
import json
from pathlib import Path

import numpy as np

from lesionseg.evaluation.metrics import FAILURE_JACCARD

METRICS = ("jaccard", "thresholded_jaccard", "dice", "sensitivity", "specificity")


def per_image(path: Path) -> dict[str, dict[str, dict]]:
    """{set: {image id: its row}} from an evaluation file."""
    evaluation = json.loads(path.read_text())
    return {source: {row["id"]: row for row in rows} for source, rows in evaluation["per_image"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    arguments = parser.parse_args()
    first, second = per_image(arguments.first), per_image(arguments.second)
    print(f"| set | images both scored | metric | {arguments.first.name} | {arguments.second.name} | difference |")
    print("|---|---:|---|---:|---:|---:|")
    for source in sorted(set(first) & set(second)):
        common = sorted(set(first[source]) & set(second[source]))
        if len(common) < 2:
            continue
        for metric in METRICS:
            first_scores = np.array([first[source][image][metric] for image in common])
            second_scores = np.array([second[source][image][metric] for image in common])
            difference = second_scores - first_scores
            standard_error = difference.std(ddof=1) / np.sqrt(len(common))
            print(
                f"| {source} | {len(common)} | {metric} | {first_scores.mean():.4f} | {second_scores.mean():.4f} | "
                f"{difference.mean():+.4f} ± {standard_error:.4f} |"
            )
        before, after = (
            sum(rows[source][image]["jaccard"] < FAILURE_JACCARD for image in common) for rows in (first, second)
        )
        print(f"| {source} | {len(common)} | failures | {before} | {after} | {after - before:+d} |")


if __name__ == "__main__":
    main()
