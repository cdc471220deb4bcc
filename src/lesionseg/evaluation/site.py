"""`lesionseg calibrate-site`: a clinic's own thresholds, refitted on its reviewed cases.

A review export (`lesionseg export-reviews`) holds what a clinic's people accepted or corrected: its own
dermoscopy, from its own camera, with masks a person approved. On the first cases (by a hash of their id, so
the choice is fixed), it refits what needs no retraining:
- the gate's thresholds: raised together, never lowered, until the site's next image is flagged with a
  probability of at most `flagged_fraction` (these are dermoscopy, whatever the gate thought). The gate's
  `ood_score` is the larger of its two parts' ratios to their lines; the site's line on it is a conformal
  quantile of the fitting cases' scores (the ⌈(n + 1)(1 − f)⌉-th smallest, the largest when n is small), and
  both lines are scaled by it, so the one score keeps its meaning;
- the review threshold: the score above which the model's calibrated share of cases goes to a person;
- the coverage thresholds, each certified with probability at least 1 − δ on these cases alone (exchangeable
  with the site's next ones, as the model's own calibration images were not) by Learn then Test with
  Hoeffding-Bentkus p-values: the site's mean missed share at or under 1 − coverage, whichever calibration set
  the site happened to give. Conformal risk control, used before, bounds it only on average over calibration
  sets, and one site has one: 50 cases of a hidden clinic then missed 0.136 at a coverage of 0.90. A level
  the site's cases cannot certify (too few: 22 at least for 0.90 with δ = 0.1, 45 for 0.95, 230 for 0.99, and
  more where anything is missed) keeps the model's own threshold.
The rest are held back, and each threshold is measured on them before and after."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg.config import Settings
from lesionseg.data.pairs import PairRecord, discover_pairs, truth_from_mask
from lesionseg.evaluation.out_of_distribution import image_scores, read_ood_manifest
from lesionseg.imaging.decode import ImageRejected, decode_upload, read_image_file
from lesionseg.predictor import Predictor
from lesionseg.uncertainty.coverage import (
    COVERAGE_GRID,
    THRESHOLD_GRID,
    cases_to_certify,
    certified_threshold,
    missed_fraction_curve,
)
from lesionseg.uncertainty.out_of_distribution import logit_of_surprise, surprise
from lesionseg.uncertainty.temperature import choose_review_threshold

REPORTED_COVERAGE = "0.90"


@dataclass
class SiteCases:
    """Per case: the gate's two raw scores, the uncertainty score and the missed-fraction curve."""

    identifiers: list[str]
    distances: np.ndarray
    logits: np.ndarray
    uncertainty_scores: np.ndarray
    missed_curves: np.ndarray

    def subset(self, rows: np.ndarray) -> "SiteCases":
        return SiteCases(
            [self.identifiers[row] for row in rows],
            self.distances[rows],
            self.logits[rows],
            self.uncertainty_scores[rows],
            self.missed_curves[rows],
        )


def read_case(record: PairRecord, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """A reviewed case's picture and lesion mask, read as the service reads an upload: regular files only (never
    a device, a pipe or a folder), no larger than an upload may be, decoded within the pixel limit, which bounds
    the time it takes. Every refusal names the case."""
    try:
        data = read_image_file(record.image_path, settings.max_upload_bytes)
        rgb = decode_upload(data, settings.max_pixels, settings.min_side).rgb
        mask_data = read_image_file(record.mask_path, settings.max_upload_bytes)
        mask = decode_upload(mask_data, settings.max_pixels, 1).rgb[..., 0]
    except ImageRejected as error:
        raise ValueError(f"case {record.identifier}: {error.message}") from None
    except OSError as error:
        raise ValueError(f"case {record.identifier}: {error.strerror or error}") from None
    if mask.shape != rgb.shape[:2]:
        raise ValueError(
            f"case {record.identifier}: its mask is {mask.shape[1]}×{mask.shape[0]} pixels and its image "
            f"{rgb.shape[1]}×{rgb.shape[0]}; a mask must be its image's size"
        )
    return rgb, truth_from_mask(mask)


def measure_cases(predictor: Predictor, records: list[PairRecord], samples: int, seed: int) -> SiteCases:
    gate = predictor.gate
    settings = Settings()
    distances, logits, scores, curves = [], [], [], []
    for record in tqdm(records, desc="site cases", unit="case"):
        rgb, truth = read_case(record, settings)
        prediction = predictor.predict(rgb, samples=samples, seed=seed)  # its trunk run gives the descriptor too
        features = prediction.descriptor[None]
        distances.append(gate.summary.distances(features)[0])
        logits.append(gate.classifier.logits(features)[0] if gate.classifier is not None else np.nan)
        scores.append(prediction.uncertainty_score)
        curves.append(missed_fraction_curve(prediction.mean_probability, truth))
    return SiteCases(
        [record.identifier for record in records], np.array(distances), np.array(logits), np.array(scores),
        np.array(curves),
    )  # fmt: skip


def fixed_order(identifiers: list[str]) -> np.ndarray:
    """The cases ordered by a hash of their id: which are fitted on does not depend on the export's order."""
    return np.argsort([hashlib.sha256(identifier.encode()).hexdigest() for identifier in identifiers])


def conformal_line(scores: np.ndarray, flagged_fraction: float) -> float:
    """The ⌈(n + 1)(1 − f)⌉-th smallest score (the largest if that rank passes n): a new exchangeable score
    exceeds it with a probability of at most f (at most 1 / (n + 1) when it is the largest)."""
    rank = int(np.ceil((len(scores) + 1) * (1.0 - flagged_fraction)))
    return float(np.sort(scores)[min(rank, len(scores)) - 1])


def site_gate_thresholds(gate, cases: SiteCases, flagged_fraction: float) -> dict:
    scores = cases.distances / gate.threshold
    if gate.classifier is not None:
        scores = np.maximum(scores, gate.classifier_scores(cases.logits))
    # Just above the line, so that the case at it passes (the gate flags at a score of 1.0 or more).
    scale = max(1.0, conformal_line(scores, flagged_fraction) * (1 + 1e-9))
    thresholds = {"threshold": gate.threshold * scale}
    if gate.classifier is not None:
        thresholds["classifier_threshold"] = logit_of_surprise(float(surprise(gate.classifier_threshold)) * scale)
    return thresholds


def site_coverage(predictor: Predictor, cases: SiteCases, delta: float) -> tuple[dict[str, float], dict]:
    """(each coverage's threshold, a record of how each was chosen): certified on the site's cases where they
    can, the model's own elsewhere."""
    thresholds, certified, kept = {}, [], []
    for coverage in COVERAGE_GRID:
        level = f"{coverage:.2f}"
        threshold = certified_threshold(cases.missed_curves, float(coverage), delta)
        if threshold is None:
            thresholds[level] = predictor.coverage_thresholds[level]
            kept.append(level)
        else:
            thresholds[level] = threshold
            certified.append(level)
    record = {
        "method": "Learn then Test, Hoeffding-Bentkus p-values, fixed-sequence from threshold 0 (Angelopoulos "
        "et al. 2021): the site's mean missed share at most 1 - coverage with probability at least 1 - delta",
        "delta": delta,
        "cases": len(cases.identifiers),
        "certified_levels": certified,
        "levels_kept_at_the_models_threshold": kept,
        "fewest_cases_to_certify": {level: cases_to_certify(float(level), delta) for level in ("0.90", "0.95", "0.99")},
    }
    return thresholds, record


def fit_site(predictor: Predictor, cases: SiteCases, flagged_fraction: float, delta: float = 0.1) -> dict:
    """The profile's thresholds from the site's fitting cases."""
    gate = predictor.gate
    coverage_thresholds, coverage_record = site_coverage(predictor, cases, delta)
    profile: dict = {
        "review_threshold": choose_review_threshold(
            cases.uncertainty_scores,
            predictor.sidecar.calibration.review_target_fraction,
        ),
        "coverage_thresholds": coverage_thresholds,
        "coverage": coverage_record,
    }
    if gate is not None:
        profile["out_of_distribution"] = site_gate_thresholds(gate, cases, flagged_fraction)
    return profile


def flagged(distances: np.ndarray, logits: np.ndarray, thresholds: dict) -> float:
    """The share the gate flags at these lines: either part at or over its own (a logit over the classifier's
    line is a probability over it)."""
    over = distances >= thresholds["threshold"]
    if thresholds.get("classifier_threshold") is not None:
        over |= logits >= thresholds["classifier_threshold"]
    return float(over.mean())


def measure_thresholds(cases: SiteCases, gate_thresholds: dict | None, review: float, coverage: dict) -> dict:
    column = int(np.searchsorted(THRESHOLD_GRID, coverage[REPORTED_COVERAGE]))
    missed = cases.missed_curves[:, column]
    measured = {
        "review_flagged": float((cases.uncertainty_scores >= review).mean()),
        "coverage_0.90_missed": float(missed.mean()),
        "coverage_0.90_missed_standard_error": float(missed.std(ddof=1) / np.sqrt(len(missed))),
    }
    if gate_thresholds is not None:
        measured["gate_flagged"] = flagged(cases.distances, cases.logits, gate_thresholds)
    return measured


def non_dermoscopy_caught(predictor: Predictor, negatives: Path, gate_thresholds: dict) -> float:
    """The share of a non-dermoscopic evaluation set (tools/build_ood_set.py) the gate flags at these lines."""
    paths = [path for group in read_ood_manifest(negatives).values() for path in group]
    features = image_scores(predictor, paths, "non-dermoscopic pictures", samples=0)["features"]
    gate = predictor.gate
    logits = gate.classifier.logits(features) if gate.classifier is not None else np.full(len(features), np.nan)
    return flagged(gate.summary.distances(features), logits, gate_thresholds)


def calibrate_site(
    predictor: Predictor,
    export: Path,
    fit_cases: int | None,
    flagged_fraction: float,
    samples: int,
    seed: int,
    negatives: Path | None = None,
    delta: float = 0.1,
) -> tuple[dict, dict]:
    """(the profile, before and after on the held-back cases, and on `negatives` if given)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"--delta must be between 0 and 1 (exclusive), got {delta}")
    records = discover_pairs(export)
    cases = measure_cases(predictor, records, samples, seed)
    order = fixed_order(cases.identifiers)
    fit_count = fit_cases if fit_cases is not None else int(round(0.7 * len(order)))
    if not 10 <= fit_count < len(order):
        raise ValueError(
            f"{export} holds {len(order)} reviewed cases; fitting on {fit_count} leaves none held back to check "
            "on, or too few to fit (at least 10)"
        )
    fitting, held_back = cases.subset(order[:fit_count]), cases.subset(order[fit_count:])
    with_lesion = int((fitting.missed_curves[:, -1] > 0).sum())  # at threshold 1.0 every lesion is missed
    if with_lesion < cases_to_certify(0.90, delta):
        raise ValueError(
            f"{export}: {with_lesion} of the {fit_count} fitting cases have a lesion in their approved mask; "
            f"certifying a coverage of 0.90 with probability {1 - delta:g} takes at least "
            f"{cases_to_certify(0.90, delta)} even when nothing is missed: review more of the site's cases"
        )
    profile = fit_site(predictor, fitting, flagged_fraction, delta)
    gate = predictor.gate
    model_gate = (
        None if gate is None else {"threshold": gate.threshold, "classifier_threshold": gate.classifier_threshold}
    )
    before = measure_thresholds(held_back, model_gate, predictor.review_threshold, predictor.coverage_thresholds)
    after = measure_thresholds(
        held_back, profile.get("out_of_distribution"), profile["review_threshold"], profile["coverage_thresholds"]
    )
    if negatives is not None and gate is not None:
        before["non_dermoscopy_caught"] = non_dermoscopy_caught(predictor, negatives, model_gate)
        after["non_dermoscopy_caught"] = non_dermoscopy_caught(predictor, negatives, profile["out_of_distribution"])
    profile |= {
        "model_sha256": predictor.sidecar.sha256,
        "site": Path(export).name,
        "fitted_on": {"cases": fit_count, "flagged_fraction": flagged_fraction, "samples": samples, "seed": seed},
    }
    report = {"held_back_cases": len(order) - fit_count, "before": before, "after": after}
    return profile, report | {"coverage": profile["coverage"]}


def format_site_report(report: dict) -> str:
    rows = [
        ("gate: share of the site's dermoscopy flagged", "gate_flagged", "{:.1%}"),
        ("coverage 0.90: mean share of the lesion missed", "coverage_0.90_missed", "{:.4f}"),
        ("review recommended", "review_flagged", "{:.1%}"),
        ("gate: share of non-dermoscopic pictures caught", "non_dermoscopy_caught", "{:.1%}"),
    ]
    lines = [f"On {report['held_back_cases']} held-back cases of the site:", "| | before | after |", "|---|---:|---:|"]
    for label, key, style in rows:
        if key in report["before"]:
            lines.append(f"| {label} | {style.format(report['before'][key])} | {style.format(report['after'][key])} |")
    coverage = report["coverage"]
    certified, kept = coverage["certified_levels"], coverage["levels_kept_at_the_models_threshold"]
    fewest = ", ".join(f"{level}: {count}" for level, count in coverage["fewest_cases_to_certify"].items())
    lines.append(
        f"Coverage, certified with probability ≥ {1 - coverage['delta']:g} on {coverage['cases']} cases: "
        f"{certified[0] + '–' + certified[-1] if certified else 'no level'}; kept at the model's thresholds: "
        f"{kept[0] + '–' + kept[-1] if kept else 'none'}. Fewest cases that can certify a level: {fewest} "
        "(more where the model misses anything)."
    )
    return "\n".join(lines)
