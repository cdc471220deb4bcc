"""`lesionseg calibrate-site`: a clinic's own thresholds, refitted on its reviewed cases.

A review export (`lesionseg export-reviews`) holds what a clinic's people accepted or corrected: its own
dermoscopy, from its own camera, with masks a person approved. On the first cases (by a hash of their id, so
the choice is fixed), it refits what needs no retraining:
- the gate, so that the site's next image is flagged with a probability of at most `flagged_fraction` (these
  are dermoscopy, whatever the gate thought) while it still catches non-dermoscopic pictures. Its classifier
  is fitted again on what it was fitted on (kept in the statistics file), with the site's cases, each also
  under camera-like shifts, added as dermoscopy. Each line is then a conformal quantile of the fitting cases'
  scores (the ⌈(n + 1)(1 − f)⌉-th smallest, the largest when n is small): the distance's, raised only as far as
  the site's cases need, never lowered; then the classifier's, on each case's logit under the classifier
  refitted without it (cross-fitting: a case's logit under a classifier fitted on it says nothing about the
  site's next case), with the cases the distance line flags counted as flagged. That line comes down where it
  would catch fewer than `min_caught` of the gate's own non-dermoscopic pictures (each scored the same way, by
  a refit without it), and the profile says how much of the site it may then flag: (m + 1) / (n + 1), m of the
  n cases being over it. Before, with 50 cases, the line at f = 0.02 had to pass the highest score: on a
  simulated site one blue-black close-up set it, and 84.8-86.1 % of a non-dermoscopic evaluation set was
  caught; brought down, 95.6-97.0 %, with 1.3-2.7 % of the site's next 150 flagged (docs/another-clinic.md);
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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg.config import Settings
from lesionseg.data.pairs import PairRecord, discover_pairs, truth_from_mask
from lesionseg.defaults import MIN_CAUGHT
from lesionseg.evaluation.out_of_distribution import descriptor, non_dermoscopic_descriptors, refit_classifier
from lesionseg.imaging.decode import ImageRejected, decode_upload, read_image_file
from lesionseg.imaging.shifts import random_camera_shift
from lesionseg.predictor import Predictor
from lesionseg.uncertainty.coverage import (
    COVERAGE_GRID,
    THRESHOLD_GRID,
    cases_to_certify,
    certified_threshold,
    missed_fraction_curve,
)
from lesionseg.uncertainty.out_of_distribution import ClassifierFitting, LinearClassifier, OutOfDistributionGate
from lesionseg.uncertainty.temperature import choose_review_threshold

REPORTED_COVERAGE = "0.90"
# Each fitting case is also seen under this many random camera-like shifts (training's augmentation), as the
# gate's own dermoscopy was: a site's next case differs from its fitted ones as another exposure or zoom would.
# On the simulated site of tests/evaluation/test_site.py (50 fitting cases), without them one dark close-up
# unlike the other 49 kept a cross-fitted logit of 12.0, and the line that passes it let 22.9 % of
# non-dermoscopy through; with eight, 6.0 and 13.9-15.2 % (three seeds); with sixteen, 12.0-14.1 %, not worth
# twice the trunk runs (each copy is one more per fitting case).
SHIFTED_COPIES = 8
# The share of the dermoscopy's weight in the refit that goes to the site's cases (with their shifted copies),
# the rest to the model's own: the profile serves this site, so its cases count as much as all the dermoscopy
# the model was fitted on, but fifty cases of 768 numbers cannot stand for dermoscopy alone.
SITE_SHARE = 0.5
# Folds of the cross-fitting that scores each fitting case with a classifier refitted without it.
FOLDS = 5


@dataclass
class SiteCases:
    """Per case: the trunk's descriptor, those of the case's shifted copies (copies × D, none for a case held
    back), the uncertainty score and the missed-fraction curve."""

    identifiers: list[str]
    descriptors: np.ndarray
    shifted_descriptors: list[np.ndarray]
    uncertainty_scores: np.ndarray
    missed_curves: np.ndarray

    def subset(self, rows: np.ndarray) -> "SiteCases":
        return SiteCases(
            [self.identifiers[row] for row in rows],
            self.descriptors[rows],
            [self.shifted_descriptors[row] for row in rows],
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


def measure_cases(
    predictor: Predictor, records: list[PairRecord], samples: int, seed: int, copied: set[str] = frozenset()
) -> SiteCases:
    """Every case read and predicted, and the cases in `copied` also seen under `SHIFTED_COPIES` shifts."""
    settings = Settings()
    descriptors, shifted, scores, curves = [], [], [], []
    for record in tqdm(records, desc="site cases", unit="case"):
        rgb, truth = read_case(record, settings)
        prediction = predictor.predict(rgb, samples=samples, seed=seed)  # its trunk run gives the descriptor too
        descriptors.append(prediction.descriptor)
        # Drawn from the case's own id: the same shifts whatever else the export holds, and in whatever order.
        generator = np.random.default_rng([seed, int(identifier_hash(record.identifier)[:15], 16)])
        copies = SHIFTED_COPIES if record.identifier in copied else 0
        shifted.append(
            np.array(
                [descriptor(predictor, random_camera_shift(rgb, truth, generator.random)[0]) for _ in range(copies)]
            ).reshape(copies, len(prediction.descriptor))
        )
        scores.append(prediction.uncertainty_score)
        curves.append(missed_fraction_curve(prediction.mean_probability, truth))
    return SiteCases(
        [record.identifier for record in records],
        np.array(descriptors),
        shifted,
        np.array(scores),
        np.array(curves),
    )


def identifier_hash(identifier: str) -> str:
    return hashlib.sha256(identifier.encode()).hexdigest()


def fixed_order(identifiers: list[str]) -> np.ndarray:
    """The cases ordered by a hash of their id: which are fitted on does not depend on the export's order."""
    return np.argsort([identifier_hash(identifier) for identifier in identifiers])


def conformal_rank(cases: int, flagged_fraction: float) -> int:
    """Which of n sorted scores is the line: the ⌈(n + 1)(1 − f)⌉-th smallest, or the largest (n) if that passes n."""
    return min(int(np.ceil((cases + 1) * (1.0 - flagged_fraction))), cases)


def conformal_line(scores: np.ndarray, flagged_fraction: float) -> float:
    """The `conformal_rank`-th smallest score: a new exchangeable score exceeds it with a probability of at most
    f (at most 1 / (n + 1) when it is the largest)."""
    return float(np.sort(scores)[conformal_rank(len(scores), flagged_fraction) - 1])


def site_classifier(
    classifier: LinearClassifier, classifier_fitting: ClassifierFitting, cases: SiteCases
) -> LinearClassifier:
    """The gate's classifier fitted again with these cases and their shifted copies added as dermoscopy."""
    added = np.concatenate([cases.descriptors, *cases.shifted_descriptors])
    return refit_classifier(classifier, classifier_fitting, added, SITE_SHARE)


def cross_fitted_logits(
    classifier: LinearClassifier, classifier_fitting: ClassifierFitting, cases: SiteCases
) -> tuple[np.ndarray, np.ndarray]:
    """(each case's logit, each of the kept non-dermoscopic descriptors' logit), each under the classifier refitted
    without its fold (the cases are in their fixed order, so the folds are too): what the site's next case, and
    the next non-dermoscopic picture, which no refit has seen, are compared with."""
    folds = np.arange(len(cases.identifiers)) % FOLDS
    others_folds = np.arange(len(classifier_fitting.others)) % FOLDS
    logits, others_logits = np.empty(len(folds)), np.empty(len(others_folds))
    for fold in range(FOLDS):
        left_out, others_left_out = folds == fold, others_folds == fold
        refitted = site_classifier(
            classifier,
            replace(classifier_fitting, others=classifier_fitting.others[~others_left_out]),
            cases.subset(np.flatnonzero(~left_out)),
        )
        logits[left_out] = refitted.logits(cases.descriptors[left_out])
        others_logits[others_left_out] = refitted.logits(classifier_fitting.others[others_left_out])
    return logits, others_logits


def catching_line(others_logits: np.ndarray, caught_otherwise: np.ndarray, min_caught: float) -> float:
    """The highest logit line (flagging at or above it) that, with those `caught_otherwise` (by the distance),
    catches at least `min_caught` of these non-dermoscopic pictures; infinity where the distance alone does."""
    needed = int(np.ceil(min_caught * len(others_logits) - 1e-9)) - int(caught_otherwise.sum())
    if needed <= 0:
        return np.inf
    return float(np.sort(others_logits[~caught_otherwise])[::-1][needed - 1])


def site_gate(
    gate: OutOfDistributionGate,
    classifier_fitting: ClassifierFitting | None,
    cases: SiteCases,
    flagged_fraction: float,
    min_caught: float = MIN_CAUGHT,
) -> tuple[OutOfDistributionGate, dict]:
    """(the gate for the site (see the module's docstring), a record of its lines). A gate whose statistics file
    keeps no fitting set (fitted before it did) keeps its classifier, whose line only rises, as the distance's
    does."""
    distance_ratios = gate.summary.distances(cases.descriptors) / gate.threshold
    # Just above the line, so that the case at it passes (the gate flags at a score of 1.0 or more).
    scale = max(1.0, conformal_line(distance_ratios, flagged_fraction) * (1 + 1e-9))
    site = replace(gate, threshold=gate.threshold * scale)
    if gate.classifier is None:
        return site, {}
    if classifier_fitting is None:
        classifier, logits, lowest = (
            gate.classifier,
            gate.classifier.logits(cases.descriptors),
            gate.classifier_threshold,
        )
    else:  # a new classifier, whose line the site's cases alone set
        classifier = site_classifier(gate.classifier, classifier_fitting, cases)
        logits, others_logits = cross_fitted_logits(gate.classifier, classifier_fitting, cases)
        lowest = -np.inf
    # One score for both parts, the logit where the distance passes a case and infinity where it flags it, so
    # that one quantile bounds the share of the site flagged by either (exactly where the distance line stays
    # the model's, which the site did not choose).
    scores = np.where(distance_ratios >= scale, np.inf, logits)
    line = max(lowest, float(np.nextafter(conformal_line(scores, flagged_fraction), np.inf)))
    record: dict = {}
    if classifier_fitting is not None:
        caught_by_distance = gate.summary.distances(classifier_fitting.others) >= site.threshold
        # Where the site's line would let too many of the gate's own non-dermoscopy through, it comes down to
        # catch them, and the site is told how much more of its dermoscopy that may flag.
        line = min(line, catching_line(others_logits, caught_by_distance, min_caught))
        over = int((scores >= line).sum())
        record = {
            "flags_at_most": (over + 1) / (len(scores) + 1),
            "non_dermoscopy_caught_cross_fitted": float((caught_by_distance | (others_logits >= line)).mean()),
            "min_caught": min_caught,
        }
    return replace(site, classifier=classifier, classifier_threshold=line), record


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


def fit_site(
    predictor: Predictor,
    cases: SiteCases,
    flagged_fraction: float,
    delta: float = 0.1,
    classifier_fitting: ClassifierFitting | None = None,
    min_caught: float = MIN_CAUGHT,
) -> tuple[dict, OutOfDistributionGate | None]:
    """(the profile's thresholds, the site's gate) from the site's fitting cases; `classifier_fitting` is what the
    model's gate classifier was fitted on."""
    coverage_thresholds, coverage_record = site_coverage(predictor, cases, delta)
    profile: dict = {
        "review_threshold": choose_review_threshold(
            cases.uncertainty_scores,
            predictor.sidecar.calibration.review_target_fraction,
        ),
        "coverage_thresholds": coverage_thresholds,
        "coverage": coverage_record,
    }
    if predictor.gate is None:
        return profile, None
    gate, lines = site_gate(predictor.gate, classifier_fitting, cases, flagged_fraction, min_caught)
    profile["out_of_distribution"] = gate_entry(
        gate, predictor.gate, predictor.sidecar.out_of_distribution.statistics_sha256
    )
    if gate.classifier is not predictor.gate.classifier:
        profile["gate"] = {
            "method": "the classifier refitted with the site's fitting cases as dermoscopy, each also under "
            f"{SHIFTED_COPIES} random camera-like shifts, together {SITE_SHARE:g} of the dermoscopy's weight; "
            f"each line a conformal quantile of the fitting cases' scores, the classifier's cross-fitted "
            f"({FOLDS} folds)",
            "model_dermoscopic_descriptors": len(classifier_fitting.dermoscopy),
            "non_dermoscopic_descriptors": len(classifier_fitting.others),
            **lines,
        }
    return profile, gate


def gate_entry(site: OutOfDistributionGate, model: OutOfDistributionGate, statistics_sha256: str) -> dict:
    """The profile's `out_of_distribution`: the site's lines and, where it was refitted, its classifier."""
    entry = {"threshold": site.threshold, "classifier_threshold": site.classifier_threshold}
    if site.classifier is not None and site.classifier is not model.classifier:
        entry["classifier"] = {
            "weights": site.classifier.weights.tolist(),
            "bias": site.classifier.bias,
            "statistics_sha256": statistics_sha256,
        }
    return entry


def flagged(gate: OutOfDistributionGate, descriptors: np.ndarray) -> float:
    """The share of these pictures the gate flags."""
    return float((gate.scores(descriptors) >= 1.0).mean())


def measure_thresholds(cases: SiteCases, gate: OutOfDistributionGate | None, review: float, coverage: dict) -> dict:
    column = int(np.searchsorted(THRESHOLD_GRID, coverage[REPORTED_COVERAGE]))
    missed = cases.missed_curves[:, column]
    measured = {
        "review_flagged": float((cases.uncertainty_scores >= review).mean()),
        "coverage_0.90_missed": float(missed.mean()),
        "coverage_0.90_missed_standard_error": float(missed.std(ddof=1) / np.sqrt(len(missed))),
    }
    if gate is not None:
        measured["gate_flagged"] = flagged(gate, cases.descriptors)
    return measured


def calibrate_site(
    predictor: Predictor,
    export: Path,
    fit_cases: int | None,
    flagged_fraction: float,
    samples: int,
    seed: int,
    negatives: Path | None = None,
    delta: float = 0.1,
    classifier_fitting: ClassifierFitting | None = None,
    min_caught: float = MIN_CAUGHT,
) -> tuple[dict, dict]:
    """(the profile, before and after on the held-back cases, and on `negatives` if given). `classifier_fitting`:
    what the model's gate classifier was fitted on (`load_classifier_fitting`); without it, only the gate's lines
    move."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"--delta must be between 0 and 1 (exclusive), got {delta}")
    if not 0.0 <= min_caught <= 1.0:
        raise ValueError(f"--min-caught must be between 0 and 1, got {min_caught}")
    records = discover_pairs(export)
    order = fixed_order([record.identifier for record in records])
    fit_count = fit_cases if fit_cases is not None else int(round(0.7 * len(order)))
    enough = 10 <= fit_count < len(order)
    refits = enough and classifier_fitting is not None and predictor.gate is not None
    copied = {records[row].identifier for row in order[:fit_count]} if refits else set()
    cases = measure_cases(predictor, records, samples, seed, copied)  # a broken case is named before all else
    if not enough:
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
    profile, gate = fit_site(predictor, fitting, flagged_fraction, delta, classifier_fitting, min_caught)
    before = measure_thresholds(held_back, predictor.gate, predictor.review_threshold, predictor.coverage_thresholds)
    after = measure_thresholds(held_back, gate, profile["review_threshold"], profile["coverage_thresholds"])
    if negatives is not None and gate is not None:
        others, _ = non_dermoscopic_descriptors(predictor, negatives, "non-dermoscopic pictures")
        before["non_dermoscopy_caught"] = flagged(predictor.gate, others)
        after["non_dermoscopy_caught"] = flagged(gate, others)
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
