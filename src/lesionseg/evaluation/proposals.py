"""Box-prompted proposals (LiteMedSAM) measured against the model, image for image on the same pairs:

- from a box around the expert's mask, each side moved by up to ±5 % of the box's size (a reviewer's box);
- from the box around the model's own mask (a proposal with no gesture at all);
- as a second opinion: the model's probability averaged with the proposal from its own box.

It also times a case's first proposal (image encoder plus decoder) and each further box (decoder alone).
`lesionseg evaluate --proposals` prints its table."""

import numpy as np
from tqdm import tqdm

from lesionseg.data.pairs import PairRecord, read_image, read_truth
from lesionseg.defaults import DEFAULT_THRESHOLD, DEFAULT_TTA
from lesionseg.evaluation.metrics import FAILURE_JACCARD, score_masks
from lesionseg.predictor import Predictor
from lesionseg.proposals.litemedsam import BoxProposer, box_around

METHODS = ("model", "box around the truth ±5 %", "model's own box", "second opinion")
BOX_JITTER = 0.05


def jittered(box: tuple[int, int, int, int], random: np.random.Generator) -> tuple[float, ...]:
    """Each side moved independently by up to ±BOX_JITTER of the box's width (x) or height (y)."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    moves = random.uniform(-BOX_JITTER, BOX_JITTER, 4) * np.array([width, height, width, height])
    return tuple(float(value) for value in np.array(box, float) + moves)


def evaluate_proposals(
    predictor: Predictor,
    proposer: BoxProposer,
    records: list[PairRecord],
    samples: int,
    seed: int,
    tta: bool = DEFAULT_TTA,
) -> tuple[dict, list[dict]]:
    """(summary, one row per image): each method's Jaccard per image; the summary's means, failures, paired
    differences from the model and the proposer's timings."""
    random = np.random.default_rng(seed)
    rows = []
    for record in tqdm(records, desc=f"proposals on {records[0].source if records else ''}", unit="image"):
        rgb, truth = read_image(record.image_path), read_truth(record.mask_path)
        prediction = predictor.predict(rgb, samples=samples, seed=seed, tta=tta)
        embedding = proposer.embed(rgb)
        from_truth = proposer.propose(embedding, jittered(box_around(truth), random))
        from_model = proposer.propose(embedding, box_around(prediction.mask))
        second_opinion = (prediction.mean_probability + from_model.probability) / 2 >= DEFAULT_THRESHOLD
        masks = dict(zip(METHODS, (prediction.mask, from_truth.mask, from_model.mask, second_opinion), strict=True))
        rows.append(
            {
                "id": record.identifier,
                **{method: score_masks(mask, truth).jaccard for method, mask in masks.items()},
                "encoder_seconds": embedding.seconds,
                "decoder_seconds": from_model.seconds,
            }
        )
    return summarise(rows), rows


def summarise(rows: list[dict]) -> dict:
    model = np.array([row["model"] for row in rows])
    summary = {"images": len(rows)}
    for method in METHODS:
        jaccards = np.array([row[method] for row in rows])
        difference = jaccards - model
        summary[method] = {
            "jaccard": float(jaccards.mean()),
            "thresholded_jaccard": float(np.where(jaccards >= FAILURE_JACCARD, jaccards, 0).mean()),
            "failures": int((jaccards < FAILURE_JACCARD).sum()),
            "difference_from_model": float(difference.mean()),
            "difference_standard_error": float(difference.std(ddof=1) / np.sqrt(len(rows))) if len(rows) > 1 else 0.0,
        }
    # Where a reviewer needs the box: the images the model fails.
    failures = model < FAILURE_JACCARD
    from_truth = np.array([row[METHODS[1]] for row in rows])[failures]
    summary["on_model_failures"] = {
        "images": int(failures.sum()),
        "model_jaccard": float(model[failures].mean()) if failures.any() else None,
        "box_around_the_truth_jaccard": float(from_truth.mean()) if failures.any() else None,
        "rescued": int((from_truth >= FAILURE_JACCARD).sum()),
    }
    encoder = np.array([row["encoder_seconds"] for row in rows])
    decoder = np.array([row["decoder_seconds"] for row in rows])
    summary["first_proposal_ms_median"] = float(np.median(encoder + decoder) * 1000)
    summary["further_box_ms_median"] = float(np.median(decoder) * 1000)
    return summary


TABLE_HEADER = [
    "| set | images | mask | Jaccard | thresholded Jaccard | failures | against the model's mask |",
    "|---|---:|---|---:|---:|---:|---:|",
]


def format_proposal_rows(summaries: dict[str, dict]) -> list[str]:
    """The table's rows: each set, each way of making the mask."""
    lines = []
    for set_name, summary in summaries.items():
        for method in METHODS:
            row = summary[method]
            difference = row["difference_from_model"], row["difference_standard_error"]
            against = "" if method == "model" else f"{difference[0]:+.4f} ± {difference[1]:.4f}"
            lines.append(
                f"| {set_name} | {summary['images']} | {method} | {row['jaccard']:.4f} | "
                f"{row['thresholded_jaccard']:.4f} | {row['failures']} | {against} |"
            )
    return lines


def format_failure_lines(summaries: dict[str, dict]) -> list[str]:
    """What a box does where the model fails (under the ISIC challenge's 0.65 Jaccard)."""
    lines = []
    for set_name, summary in summaries.items():
        failures = summary["on_model_failures"]
        if failures["images"]:
            lines.append(
                f"- {set_name}: on the model's {failures['images']} failures, Jaccard {failures['model_jaccard']:.3f};"
                f" a box around the truth gives {failures['box_around_the_truth_jaccard']:.3f}, and"
                f" {failures['rescued']} of them reach 0.65"
            )
    return lines


def format_proposal_table(summaries: dict[str, dict]) -> str:
    lines = [*TABLE_HEADER, *format_proposal_rows(summaries), "", *format_failure_lines(summaries), ""]
    for name, summary in summaries.items():
        lines.append(
            f"{name}: first proposal {summary['first_proposal_ms_median']:.0f} ms, a further box "
            f"{summary['further_box_ms_median']:.0f} ms (medians)"
        )
    return "\n".join(lines)
