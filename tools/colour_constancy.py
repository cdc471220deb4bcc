"""Shades of Gray colour constancy, measured on and off with the shipped weights: the first N test pairs of each
set under the shift bed's photometric shifts, each predicted as given and after `imaging.colour.shades_of_gray`,
and compared pair for pair (mean Jaccard difference, its paired standard error, failures).

The model was trained without it, so this measures it as preprocessing at inference only; a model trained with
it is the other half of the question.

    python tools/colour_constancy.py --limit 60
"""

import argparse
from pathlib import Path

import numpy as np

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.splits import Split, select_pairs
from lesionseg.evaluation.evaluate import evaluate_pairs
from lesionseg.evaluation.metrics import FAILURE_JACCARD
from lesionseg.imaging.colour import shades_of_gray
from lesionseg.imaging.shifts import SHIFTS, Shift
from lesionseg.predictor import Predictor

PHOTOMETRIC = ("none", "warm light", "cool light", "gamma 1.6", "gamma 0.6", "under-exposed 0.6", "over-exposed 1.3")


def with_colour_constancy(shift: Shift) -> Shift:
    def apply(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shifted, shifted_mask = shift.apply(rgb, mask)
        return shades_of_gray(shifted), shifted_mask

    return Shift(f"{shift.name}, Shades of Gray", apply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--backend", default="auto")
    arguments = parser.parse_args()
    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS, arguments.backend)
    split = Split.of_model(predictor.sidecar.training)
    print("| set | shift | pairs | Jaccard, as given | with Shades of Gray | difference | failures |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for set_name in ("isic2018", "ham10000"):
        records = select_pairs(arguments.data_root, set_name, "test", split)[: arguments.limit]
        for shift in (shift for shift in SHIFTS if shift.name in PHOTOMETRIC):
            rows = [
                evaluate_pairs(predictor, records, samples=10, seed=0, shift=variant)[1]
                for variant in (shift, with_colour_constancy(shift))
            ]
            plain, corrected = (np.array([row["jaccard"] for row in variant]) for variant in rows)
            difference = corrected - plain
            error = difference.std(ddof=1) / np.sqrt(len(difference))
            failures = [int((scores < FAILURE_JACCARD).sum()) for scores in (plain, corrected)]
            print(
                f"| {set_name} | {shift.name} | {len(plain)} | {plain.mean():.4f} | {corrected.mean():.4f} | "
                f"{difference.mean():+.4f} ± {error:.4f} | {failures[0]} → {failures[1]} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
