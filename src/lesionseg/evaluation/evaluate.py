"""Scores a checkpoint on ISIC-layout pairs at each image's own size, as the served masks are made."""

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg.evaluation.metrics import METRIC_NAMES, mean_scores, score_masks, truth_from_mask_image
from lesionseg.predictor import Predictor
from lesionseg.training.data import PairRecord, discover_pairs, read_mask, read_rgb, split_pairs


def select_pairs(
    data_root: Path, set_name: str, split: str, validation_fraction: float, split_seed: int
) -> list[PairRecord]:
    records = discover_pairs(Path(data_root) / set_name)
    if split == "all":
        return records
    training, validation = split_pairs(records, validation_fraction, split_seed)
    return validation if split == "validation" else training


def evaluate_pairs(
    predictor: Predictor, records: list[PairRecord], samples: int, seed: int, threshold: float = 0.5
) -> tuple[dict[str, float], list[dict]]:
    """Mean metrics and one row per image. The mask is the MC mean ≥ threshold, as served."""
    rows, scores = [], []
    for record in tqdm(records, desc=f"evaluating {records[0].source if records else ''}", unit="image"):
        prediction = predictor.predict(read_rgb(record.image_path), samples=samples, seed=seed, threshold=threshold)
        truth = truth_from_mask_image(read_mask(record.mask_path))
        score = score_masks(prediction.mask, truth)
        scores.append(score)
        rows.append(
            {
                "id": record.identifier,
                **score.to_dict(),
                "mean_uncertainty_std": float(np.mean(prediction.uncertainty_std)),
            }
        )
    return mean_scores(scores), rows


def format_table(results: dict[str, dict[str, float]], pair_counts: dict[str, int]) -> str:
    header = f"{'set':<12} {'pairs':>6} " + " ".join(f"{name:>20}" for name in METRIC_NAMES)
    lines = [header, "-" * len(header)]
    for set_name, means in results.items():
        values = " ".join(f"{means[name]:>20.4f}" for name in METRIC_NAMES)
        lines.append(f"{set_name:<12} {pair_counts[set_name]:>6} {values}")
    return "\n".join(lines)


def write_report(path: Path, report: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
