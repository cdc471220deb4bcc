"""Fits the out-of-distribution gate and measures it: AUROC, true-negative rate at 95 % true-positive
rate, and the share of each set that gets flagged.

In-domain images are the positives (they should pass); non-dermoscopic ones the negatives. The gate's
Gaussian is fitted on training images, and its classifier on training images against the training set of
non-dermoscopic pictures (`tools/build_ood_set.py --training`, no source shared with the evaluation set).

Every user is another clinic, so "training images" includes them as other cameras would show them: a share of
them under random camera-like shifts (`imaging/shifts.py`: close-ups, white balance, exposure, vignette, blur,
resolution, compression). And the thresholds bound the worst group, not the pooled rate: each part of the
held-out dermoscopy (`held_out_dermoscopy(..., "threshold")`, never trained on) and the validation pairs under
each shift of the test bed is a group, and each threshold is the highest of the groups' quantiles, so that no
group has more than `flagged_fraction` flagged. The gate is reported on another part that chose nothing
(`held_out_dermoscopy(..., "report")`, the test split under the same shifts) and on the evaluation set.
"""

import csv
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from lesionseg.config import Settings
from lesionseg.data.pairs import PairRecord, read_image, read_truth
from lesionseg.data.splits import Split, select_pairs
from lesionseg.defaults import DEFAULT_SAMPLES, DEFAULT_TTA
from lesionseg.imaging.decode import ImageRejected, decode_upload
from lesionseg.imaging.shifts import SHIFTS, random_camera_shift
from lesionseg.model.sidecar import file_sha256
from lesionseg.predictor import Predictor
from lesionseg.uncertainty.out_of_distribution import (
    ClassifierFitting,
    GaussianSummary,
    LinearClassifier,
    OutOfDistributionGate,
)

# The unlabeled 128 px ISIC test images: the first ones are reported on, the rest help fit the gate.
REPORTED_SMALL_IMAGES = 400
# Dermoscopic descriptors kept beside the gate for `calibrate-site`'s refit, of the 11,400 it was fitted on: 1.5 MB
# in float16. On the simulated site of tests/evaluation/test_site.py, refitted after 100 cases from three samples
# of 1,000 the gate caught 91.9-92.6 % of non-dermoscopy, from three of 2,000 92.4-94.2 %, from all 11,400
# 94.7 %; with 1,000 the statistics file is 3.1 MB.
KEPT_DERMOSCOPY = 1000


def read_upload(path: Path, predictor: Predictor) -> np.ndarray | None:
    """The RGB array an upload of this file would give the model; None if it would be refused."""
    limits = Settings()
    try:
        return decode_upload(Path(path).read_bytes(), limits.max_pixels, limits.min_side, 2 * predictor.input_size).rgb
    except ImageRejected:
        return None


def reduced(rgb: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """The picture at 96–160 px a side: how a lower-resolution camera or a thumbnail would show it."""
    side = int(generator.integers(96, 161))
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def image_scores(
    predictor: Predictor,
    paths: list[Path],
    description: str,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    reduce_with: np.random.Generator | None = None,
    tta: bool = DEFAULT_TTA,
) -> dict[str, np.ndarray]:
    """Per image: the trunk's descriptor and, unless `samples` is 0, the MC-dropout uncertainty score
    (the alternative the gate is measured against). `reduce_with` first lowers each image's resolution
    at random. Files an upload would refuse are skipped."""
    features, uncertainty = [], []
    for path in tqdm(paths, desc=description, unit="image"):
        rgb = read_upload(path, predictor)
        if rgb is None:
            continue
        if reduce_with is not None:
            rgb = reduced(rgb, reduce_with)
        if not samples:
            features.append(descriptor(predictor, rgb))
            continue
        prediction = predictor.predict(rgb, samples=samples, seed=seed, tta=tta)  # one trunk run gives both
        features.append(prediction.descriptor)
        uncertainty.append(prediction.uncertainty_score)
    return {"features": np.array(features), "uncertainty_score": np.array(uncertainty)}


def descriptor(predictor: Predictor, rgb: np.ndarray) -> np.ndarray:
    """The trunk's image descriptor, which the gate scores."""
    return predictor.backend.trunk(predictor.model_input(rgb))[1][0]


def shifted_descriptors(predictor: Predictor, records: list[PairRecord], seed: int = 0) -> np.ndarray:
    """Each pair once under a random camera-like shift, as training's augmentation draws them."""
    generator = np.random.default_rng(seed)
    features = []
    for record in tqdm(records, desc="under random camera shifts", unit="image"):
        rgb, _ = random_camera_shift(
            read_image(record.image_path), read_truth(record.mask_path), lambda: float(generator.random())
        )
        features.append(descriptor(predictor, rgb))
    return np.array(features)


def shift_groups(predictor: Predictor, records: list[PairRecord], include_none: bool = False) -> dict[str, np.ndarray]:
    """{shift name: descriptors of `records` under it}, for each shift of the test bed (but "none", unless
    `include_none`). Each pair is read once and shifted every way."""
    shifts = SHIFTS if include_none else SHIFTS[1:]
    features: dict[str, list[np.ndarray]] = {shift.name: [] for shift in shifts}
    for record in tqdm(records, desc="pairs under each shift", unit="image"):
        rgb, truth = read_image(record.image_path), read_truth(record.mask_path)
        for shift in shifts:
            features[shift.name].append(descriptor(predictor, shift.apply(rgb, truth)[0]))
    return {name: np.array(group) for name, group in features.items()}


def unlabeled(data_root: Path, folder: str) -> list[Path]:
    return sorted((Path(data_root) / "unlabeled" / folder).glob("*.jpg"))


def fitting_images(
    data_root: Path, sets: list[str], count: int, split: Split
) -> tuple[list[Path], list[Path], list[PairRecord]]:
    """(images, images to reduce, pairs to shift): a fixed sample of `count` training-split images, the first
    40 % of them again at reduced resolution, the unlabeled 128 px ISIC test images after the first 400
    (which are kept for the report), and the last 40 % of the sample's pairs, to be seen under camera-like
    shifts. The reduced, small and shifted images teach the gate that another camera is still dermoscopy."""
    training = [r for name in sets for r in select_pairs(data_root, name, "training", split)]
    chosen = np.random.default_rng(0).permutation(len(training))[:count]
    sample = [training[index] for index in sorted(chosen)]
    small = unlabeled(data_root, "isic2018-test-128px")[REPORTED_SMALL_IMAGES:]
    paths = [record.image_path for record in sample]
    return paths + small, paths[: int(0.4 * len(paths))], sample[-int(0.4 * len(sample)) :]


def held_out_dermoscopy(data_root: Path, sets: list[str], part: str, split: Split) -> dict[str, list[Path]]:
    """Dermoscopy never trained on, in two disjoint parts: `threshold` (the validation split, and the
    even-numbered unlabeled ISIC 2017 and full-size images) chooses the threshold; `report` (the test
    split, the odd-numbered ones, and the first 400 128 px test images) chooses nothing."""
    subset = "validation" if part == "threshold" else "test"
    parts = {f"{name} {subset}": [r.image_path for r in select_pairs(data_root, name, subset, split)] for name in sets}
    for folder in ("isic2017-256px", "isic-original-size"):
        images = unlabeled(data_root, folder)
        parts[f"unlabeled {folder} ({'even' if part == 'threshold' else 'odd'})"] = images[part != "threshold" :: 2]
    if part == "report":
        parts["unlabeled isic2018-test-128px (first 400)"] = unlabeled(data_root, "isic2018-test-128px")[
            :REPORTED_SMALL_IMAGES
        ]
    return parts


def fit_classifier(
    dermoscopy: np.ndarray, others: np.ndarray, other_kinds: np.ndarray | None = None
) -> tuple[LinearClassifier, float]:
    """Logistic regression, dermoscopy (0) against other pictures (1), on standardised descriptors. The
    classes weigh the same although dermoscopy outnumbers the rest about ten to one; the regularisation is
    chosen by 5-fold cross-validation on these training pictures only. Given `other_kinds` (each picture's
    kind: artwork, documents, photos...), each fold holds out whole kinds, so the regularisation is the one that
    best catches a kind of picture never seen, and does not depend on the order the pictures are listed in
    (with contiguous folds it did: two orders of the same pictures chose weights a third apart in size).
    (The classifier, its loss weight: see `ClassifierFitting`.)"""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([dermoscopy, others])
    labels = np.concatenate([np.zeros(len(dermoscopy)), np.ones(len(others))])
    scaler = StandardScaler().fit(features)
    folds = 5
    if other_kinds is not None:
        _, kinds = np.unique(other_kinds, return_inverse=True)
        groups = np.concatenate([np.arange(len(dermoscopy)) % folds, folds + kinds])
        folds = list(GroupKFold(n_splits=folds).split(features, labels, groups))
    model = LogisticRegressionCV(
        Cs=10,
        cv=folds,
        class_weight="balanced",
        scoring="roc_auc",
        max_iter=5000,
        l1_ratios=(0.0,),
        use_legacy_attributes=False,
    ).fit(scaler.transform(features), labels)
    classifier = LinearClassifier(scaler.mean_, scaler.scale_, model.coef_[0].copy(), float(model.intercept_[0]))
    # "balanced" weighs each class in all as half the pictures, so scikit-learn's C × Σ weighted losses is
    # C × (pictures / 2) × (mean loss on each class, summed).
    return classifier, float(model.C_) * len(features) / 2


def kept_fitting(dermoscopy: np.ndarray, others: np.ndarray, loss_weight: float) -> ClassifierFitting:
    """What the statistics file keeps of a classifier's fitting set: a fixed sample of its dermoscopy, all the rest."""
    sample = np.sort(np.random.default_rng(0).permutation(len(dermoscopy))[:KEPT_DERMOSCOPY])
    return ClassifierFitting(dermoscopy[sample], others, loss_weight)


def refit_classifier(
    classifier: LinearClassifier, fitting: ClassifierFitting, added_dermoscopy: np.ndarray, added_share: float
) -> LinearClassifier:
    """`classifier` fitted again on its fitting set, with `added_dermoscopy` (rows of descriptors, each weighing the
    same) given `added_share` of the dermoscopy's weight and the kept sample the rest: the objective of
    `ClassifierFitting`, on the classifier's own standardisation, so that only its weights and bias change.
    Newton's method from the classifier's own weights: NumPy only, the same answer on every machine, converged
    in a few steps where scikit-learn's solver stopped at a tolerance, so two fits of the same cases agree."""
    dermoscopy_weights = np.concatenate(
        [
            np.full(len(fitting.dermoscopy), (1.0 - added_share) / len(fitting.dermoscopy)),
            np.full(len(added_dermoscopy), added_share / len(added_dermoscopy)),
        ]
    )
    features = np.concatenate([fitting.dermoscopy, added_dermoscopy, fitting.others])
    design = np.column_stack(
        [(features - classifier.feature_mean) / classifier.feature_scale, np.ones(len(features))]
    )  # the last column is the bias
    labels = np.concatenate([np.zeros(len(dermoscopy_weights)), np.ones(len(fitting.others))])
    weights = fitting.loss_weight * np.concatenate(
        [dermoscopy_weights, np.full(len(fitting.others), 1.0 / len(fitting.others))]
    )
    penalty = np.append(np.ones(design.shape[1] - 1), 0.0)  # the bias is not regularised
    signs = 2 * labels - 1

    def objective(parameters: np.ndarray) -> float:
        return 0.5 * float(penalty @ parameters**2) + float(weights @ np.logaddexp(0.0, -signs * (design @ parameters)))

    parameters = np.append(classifier.weights, classifier.bias)
    for _ in range(100):
        probabilities = np.exp(-np.logaddexp(0.0, -(design @ parameters)))  # the sigmoid, without overflow
        gradient = penalty * parameters + design.T @ (weights * (probabilities - labels))
        hessian = np.diag(penalty) + (design.T * (weights * probabilities * (1 - probabilities))) @ design
        step = np.linalg.solve(hessian, gradient)
        decrement = float(gradient @ step)
        if decrement < 1e-12:
            break
        length, current = 1.0, objective(parameters)
        while objective(parameters - length * step) > current - 0.25 * length * decrement and length > 1e-8:
            length /= 2
        parameters = parameters - length * step
    return LinearClassifier(classifier.feature_mean, classifier.feature_scale, parameters[:-1], float(parameters[-1]))


def worst_group_threshold(scores_by_group: dict[str, np.ndarray], quantile: float) -> float:
    """The threshold under which every group keeps at least `quantile` of its scores."""
    return float(max(np.quantile(scores, quantile) for scores in scores_by_group.values()))


def fit_gate(
    training_features: np.ndarray,
    held_out_groups: dict[str, np.ndarray],
    flagged_fraction: float,
    other_features: np.ndarray | None = None,
    other_kinds: np.ndarray | None = None,
) -> tuple[OutOfDistributionGate, ClassifierFitting | None]:
    """The Gaussian on `training_features` and, given `other_features` (non-dermoscopic pictures), the
    classifier too, with what to keep of its fitting set. Each threshold flags at most half of `flagged_fraction`
    of every held-out group (all of it without the classifier), so that together they flag at most
    `flagged_fraction` of any group."""
    summary = GaussianSummary.fit(training_features)
    quantile = 1.0 - (flagged_fraction if other_features is None else flagged_fraction / 2)
    threshold = worst_group_threshold(
        {name: summary.distances(features) for name, features in held_out_groups.items()}, quantile
    )
    if other_features is None:
        return OutOfDistributionGate(summary, threshold), None
    classifier, loss_weight = fit_classifier(training_features, other_features, other_kinds)
    classifier_threshold = worst_group_threshold(
        {name: classifier.logits(features) for name, features in held_out_groups.items()}, quantile
    )
    gate = OutOfDistributionGate(summary, threshold, classifier, classifier_threshold)
    return gate, kept_fitting(training_features, other_features, loss_weight)


def calibrate_gate(
    predictor: Predictor,
    split: Split,
    data_root: Path,
    sets: list[str],
    training_images: int,
    flagged_fraction: float,
    negatives: Path | None,
    shifted_pairs: int,
) -> tuple[OutOfDistributionGate, ClassifierFitting | None, dict]:
    """Fits the gate for `predictor` (see the module's docstring); (the gate, what to keep of its classifier's
    fitting set, what the sidecar records)."""
    fitting, shifted_count = training_descriptors(predictor, data_root, sets, training_images, split)
    held_out = {
        name: image_scores(predictor, paths, name, samples=0)["features"]
        for name, paths in held_out_dermoscopy(data_root, sets, "threshold", split).items()
    }
    # One group per set and shift, each of the set's whole validation split (`shifted_pairs` = 0): the bound
    # is on the worst source under the worst shift. In 0.5.0 both sets' first 60 validation pairs were pooled
    # per shift; a 1 % quantile of 120 scores is nearly their maximum, and ISIC's harder photos hid among
    # HAM10000's, so the whole test split under a shift was flagged up to 4.0 % (docs/another-clinic.md).
    for name in sets:
        validation = select_pairs(data_root, name, "validation", split)
        validation = validation[:shifted_pairs] if shifted_pairs else validation
        held_out |= {
            f"{name} validation, {shift}": features for shift, features in shift_groups(predictor, validation).items()
        }
    others, kinds = non_dermoscopic_descriptors(predictor, negatives) if negatives else (None, None)
    gate, kept = fit_gate(fitting, held_out, flagged_fraction, others, kinds)
    flagged = {name: float((gate.scores(features) >= 1.0).mean()) for name, features in held_out.items()}
    record = {
        "method": "Mahalanobis distance of the trunk's image descriptor (per-channel mean and standard deviation of "
        "the encoder's deepest features and of the trunk's last level) from a Gaussian fitted on training images, "
        "some under random camera-like shifts"
        + (
            "" if others is None else "; or a logistic-regression dermoscopy-vs-other classifier on the same descriptor"
        ),
        "threshold": gate.threshold,
        "threshold_chosen": f"at most {flagged_fraction:.0%} of any group of held-out dermoscopy flagged"
        + ("" if others is None else ", half by each threshold")
        + " (the validation split, the even-numbered unlabeled ISIC 2017 and full-size images, and "
        + (f"{shifted_pairs} validation pairs" if shifted_pairs else "the validation split")
        + " of each set under each camera-like shift of the test bed, a group per set and shift)",
        "held_out_flagged": flagged,
        "fitted_on": {
            "descriptors": len(fitting),
            "of_which_under_camera_shifts": shifted_count,
            "held_out_groups": {name: len(features) for name, features in held_out.items()},
        },
    }
    if others is not None:
        record["classifier_threshold"] = gate.classifier_threshold
        record["fitted_on"]["non_dermoscopic_pictures"] = len(others)
        record["fitted_on"]["non_dermoscopic_manifest_sha256"] = file_sha256(Path(negatives) / "manifest.csv")
        record["fitted_on"]["kept_for_site_refits"] = kept_record(kept)
    return gate, kept, record


def training_descriptors(
    predictor: Predictor, data_root: Path, sets: list[str], training_images: int, split: Split
) -> tuple[np.ndarray, int]:
    """(the dermoscopic descriptors the gate is fitted on, how many of them are under camera shifts): see
    `fitting_images`."""
    images, images_to_reduce, pairs_to_shift = fitting_images(data_root, sets, training_images, split)
    descriptors = np.concatenate(
        [
            image_scores(predictor, images, "training images", samples=0)["features"],
            image_scores(
                predictor, images_to_reduce, "at reduced resolution", samples=0, reduce_with=np.random.default_rng(0)
            )["features"],
            shifted_descriptors(predictor, pairs_to_shift),
        ]
    )
    return descriptors, len(pairs_to_shift)


def non_dermoscopic_descriptors(
    predictor: Predictor, negatives: Path, label: str = "non-dermoscopic training pictures"
) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors, each picture's kind) of a non-dermoscopic set (tools/build_ood_set.py, with --training for the
    set the gate is fitted on); `label` names it in the progress bars."""
    scores = {
        kind: image_scores(predictor, paths, f"{label}: {kind}", samples=0)["features"]
        for kind, paths in read_ood_manifest(negatives).items()
    }
    kinds = np.concatenate([[kind] * len(features) for kind, features in scores.items()])
    return np.concatenate(list(scores.values())), kinds


def kept_record(kept: ClassifierFitting) -> dict:
    """What the sidecar says of the fitting set kept in the statistics file."""
    return {
        "dermoscopic_descriptors": len(kept.dermoscopy),
        "non_dermoscopic_descriptors": len(kept.others),
        "loss_weight": kept.loss_weight,
        "why": "lesionseg calibrate-site refits the classifier with a site's own dermoscopy added",
    }


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a negative scores above a positive), ties counted half: higher score = more out of distribution."""
    above = (negatives[:, None] > positives[None, :]).mean()
    tied = (negatives[:, None] == positives[None, :]).mean()
    return float(above + 0.5 * tied)


def true_negative_rate_at(positives: np.ndarray, negatives: np.ndarray, true_positive_rate: float = 0.95) -> float:
    """The share of negatives flagged when the threshold lets `true_positive_rate` of positives pass."""
    threshold = np.quantile(positives, true_positive_rate)
    return float((negatives > threshold).mean())


def detection_report(in_domain: dict[str, np.ndarray], out_of_domain: dict[str, np.ndarray], line: float) -> dict:
    """AUROC and TNR at 95 % TPR of all in-domain sets against all others, and each set's flag rate
    (score ≥ `line`)."""
    positives = np.concatenate(list(in_domain.values()))
    negatives = np.concatenate(list(out_of_domain.values()))
    return {
        "auroc": auroc(positives, negatives),
        "tnr_at_95_tpr": true_negative_rate_at(positives, negatives),
        "flag_rates": {
            name: {"images": len(scores), "flagged": float((scores >= line).mean())}
            for name, scores in {**in_domain, **out_of_domain}.items()
        },
    }


def read_ood_manifest(folder: Path) -> dict[str, list[Path]]:
    """The evaluation set `tools/build_ood_set.py` writes: images by group, listed in manifest.csv."""
    groups: dict[str, list[Path]] = {}
    with open(Path(folder) / "manifest.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            groups.setdefault(row["group"], []).append(Path(folder) / row["path"])
    return groups


def evaluate_gate(
    predictor: Predictor,
    split: Split,
    data_root: Path,
    sets: list[str],
    ood_manifest: Path,
    samples: int,
    seed: int,
    tta: bool = DEFAULT_TTA,
    limit: int | None = None,
) -> dict:
    """The gate and, as the alternative, MC-dropout's review flag, on held-out dermoscopy that chose
    nothing (the test split, the unlabeled ISIC sets) against the non-dermoscopic evaluation set: a
    detection report per method."""
    if predictor.gate is None:
        raise ValueError("this model has no out-of-distribution gate: run `lesionseg calibrate-ood` first")
    in_domain_paths = held_out_dermoscopy(data_root, sets, "report", split)
    scores = {
        kind: {
            name: image_scores(predictor, paths[:limit], name, samples, seed, tta=tta)
            for name, paths in paths_by_name.items()
        }
        for kind, paths_by_name in (("in", in_domain_paths), ("out", read_ood_manifest(ood_manifest)))
    }
    gate = {
        kind: {name: predictor.gate.scores(result["features"]) for name, result in results.items()}
        for kind, results in scores.items()
    }
    dropout = {
        kind: {name: result["uncertainty_score"] for name, result in results.items()}
        for kind, results in scores.items()
    }
    methods = {"ood_gate": detection_report(gate["in"], gate["out"], 1.0)}
    if predictor.gate.classifier is not None:  # each part alone, at its own threshold: what the other adds
        components = {
            kind: {name: predictor.gate.component_scores(result["features"]) for name, result in results.items()}
            for kind, results in scores.items()
        }
        for part in ("distance", "classifier"):
            alone = {kind: {name: parts[part] for name, parts in sets.items()} for kind, sets in components.items()}
            methods[f"ood_gate_{part}_alone"] = detection_report(alone["in"], alone["out"], 1.0)
    methods["mc_dropout_review_flag"] = detection_report(dropout["in"], dropout["out"], predictor.review_threshold)
    return methods
