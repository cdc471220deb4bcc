"""`lesionseg calibrate-site` on a simulated clinic, and the profile it writes as the service loads it. The
clinic: HAM10000 test pairs (never trained on) as a darker close-up camera shows them (zoom 2.2×, gamma 1.6),
the kind of photo the shipped gate called "not dermoscopy" most often in another clinic's images.

The bounds are the method's, not what one run gave: the site's gate line is the k-th smallest of the n fitting
cases' scores (k = ⌈(n + 1)(1 − f)⌉, at most n, or lower where the line came down to catch the gate's own
non-dermoscopy: the profile says, as the bound (n + 1 − k) / (n + 1)), which a new exchangeable case's score
exceeds with probability Beta(n + 1 − k, k) over the fitting cases the site happened to give; so the number of
held-back cases over it is beta-binomial, and a count it reaches with probability under 1 % fails the test.
(The classifier's scores are cross-fitted, each fitting case scored by a classifier refitted without it, which
makes them exchangeable with a new case's only nearly; and where the line came down, its rank was chosen with
the cases' scores in view, so the bound is nearly the method's too.) The share of non-dermoscopic pictures
caught is a binomial count over the set."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from scipy.stats import betabinom, binom
from tests.conftest import RunningServer

import lesionseg
from lesionseg.config import DEFAULT_WEIGHTS, Settings
from lesionseg.data.pairs import discover_pairs, read_image, read_truth
from lesionseg.data.splits import Split
from lesionseg.evaluation.out_of_distribution import read_ood_manifest
from lesionseg.imaging.shifts import gamma, zoom_on_lesion
from lesionseg.model.sidecar import CheckpointError, read_sidecar

# Slow tier (`make test-fast` leaves it out): each test runs the lesionseg command in its own process on real images.
pytestmark = pytest.mark.slow

FIT_CASES, HELD_BACK_CASES = 50, 150
FLAGGED_FRACTION = 0.02  # calibrate-site's default
# The non-dermoscopic evaluation set (`python tools/build_ood_set.py DIR`): built from packages fetched over the
# network, so not in the repository; it fits nothing and chooses nothing.
OOD_SET = os.environ.get("LESIONSEG_OOD_SET")


def most_flagged(profile: dict) -> float:
    """The share of the held-back cases over the site's line that a gate keeping the profile's promise reaches with
    probability under 1 % (see the module's docstring)."""
    fitted, held_back = profile["fitted_on"]["cases"], profile["held_back"]["held_back_cases"]
    over = round(profile["gate"]["flags_at_most"] * (fitted + 1)) - 1  # fitting cases over the line
    rank = fitted - over
    assert rank <= min(int(np.ceil((fitted + 1) * (1 - FLAGGED_FRACTION))), fitted)  # never above f's line
    return float(betabinom(held_back, fitted + 1 - rank, rank).isf(0.01)) / held_back


def least_caught(pictures: int, rate: float) -> float:
    """The share of `pictures` under which a gate that catches `rate` of such pictures falls with probability
    under 1 %."""
    return float(binom(pictures, rate).ppf(0.01)) / pictures


@pytest.fixture(scope="module")
def simulated_site(data_root, tmp_path_factory) -> Path:
    """An export-shaped folder of the simulated clinic's reviewed cases."""
    site = tmp_path_factory.mktemp("sites") / "dark-close-ups"
    (site / "images").mkdir(parents=True)
    (site / "masks").mkdir()
    split = Split.of_model(read_sidecar(DEFAULT_WEIGHTS).training)
    for record in split.select(discover_pairs(data_root / "ham10000"), "test")[: FIT_CASES + HELD_BACK_CASES]:
        rgb, truth = zoom_on_lesion(read_image(record.image_path), read_truth(record.mask_path), 2.2)
        cv2.imwrite(str(site / "images" / f"{record.identifier}.jpg"), cv2.cvtColor(gamma(rgb, 1.6), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(site / "masks" / f"{record.identifier}_segmentation.png"), truth.astype("uint8") * 255)
    return site


def calibrate(site: Path, profile: Path, fit_cases: int, *more: str) -> tuple[Path, str]:
    completed = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "calibrate-site", str(site), "--output", str(profile),
         "--fit-cases", str(fit_cases), *more],
        capture_output=True,
        text=True,
        timeout=1800,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return profile, completed.stdout


@pytest.fixture(scope="module")
def calibrated(simulated_site, tmp_path_factory) -> tuple[Path, str]:
    """Measured on the non-dermoscopic evaluation set too, where it is at hand."""
    negatives = ["--negatives", OOD_SET] if OOD_SET else []
    return calibrate(simulated_site, tmp_path_factory.mktemp("profile") / "site.json", FIT_CASES, *negatives)


def test_after_fifty_cases_the_site_is_within_the_gates_and_the_coverages_bounds(calibrated):
    profile_path, printed = calibrated
    profile = json.loads(profile_path.read_text())
    held_back = profile["held_back"]
    assert held_back["held_back_cases"] == HELD_BACK_CASES and "| gate:" in printed
    after = held_back["after"]
    assert after["gate_flagged"] <= most_flagged(profile)
    assert after["gate_flagged"] <= held_back["before"]["gate_flagged"]
    assert profile["format"] == "lesionseg-site-profile/2"  # the gate's classifier refitted: 768 weights
    assert len(profile["out_of_distribution"]["classifier"]["weights"]) == 768
    # Certified with probability 0.9 on this site's own 50 cases: its next 150 miss at most the promised share
    # (conformal risk control, before, bounded only the average over calibration sets: 0.136 on a hidden clinic).
    assert after["coverage_0.90_missed"] <= 0.10
    assert "0.90" in profile["coverage"]["certified_levels"] and profile["coverage"]["delta"] == 0.1
    assert "Fewest cases that can certify a level: 0.90: 22" in printed
    # 50 cases at a flagged fraction of 0.02: the line that keeps it must pass the highest score, which one
    # blue-black close-up sets; it came down to catch 99 % of the gate's own non-dermoscopy, and says so.
    lines = profile["gate"]
    assert lines["min_caught"] == 0.99 and lines["non_dermoscopy_caught_cross_fitted"] >= 0.99
    if lines["flags_at_most"] > FLAGGED_FRACTION:
        assert f"may flag up to {lines['flags_at_most']:.1%} of the site's next cases, more than" in printed
    else:
        assert f"note: with {FIT_CASES} fitting cases, the gate's line must pass the highest" in printed
    assert profile["model_sha256"] == read_sidecar(DEFAULT_WEIGHTS).sha256


def test_after_fifty_cases_the_gate_still_catches_nine_in_ten_non_dermoscopic_pictures(calibrated):
    """The issue's bar, on a set that fitted nothing. Raising the gate's lines until the site passed caught 65.6 %
    of it after 50 cases; the refitted classifier with its line at the highest of the 50 cross-fitted scores,
    which one blue-black close-up set, 86.1 % (docs/another-clinic.md). Its line now comes down to catch 99 % of
    the gate's own non-dermoscopic pictures."""
    if not OOD_SET or not (Path(OOD_SET) / "manifest.csv").is_file():
        pytest.skip("LESIONSEG_OOD_SET names no non-dermoscopic evaluation set (python tools/build_ood_set.py DIR)")
    profile_path, printed = calibrated
    profile = json.loads(profile_path.read_text())
    assert "| gate: share of non-dermoscopic pictures caught |" in printed
    pictures = sum(len(paths) for paths in read_ood_manifest(Path(OOD_SET)).values())
    assert profile["held_back"]["after"]["non_dermoscopy_caught"] >= least_caught(pictures, 0.90)
    assert profile["held_back"]["after"]["gate_flagged"] <= most_flagged(profile)


def test_the_profile_replaces_the_models_thresholds_where_it_is_loaded(calibrated, real_image_path):
    profile_path, _ = calibrated
    profile = json.loads(profile_path.read_text())
    segmenter = lesionseg.load(backend="onnx", settings=Settings(site_profile=profile_path))
    assert segmenter.predictor.review_threshold == profile["review_threshold"]
    assert segmenter.predictor.gate.threshold == profile["out_of_distribution"]["threshold"]
    refitted = profile["out_of_distribution"]["classifier"]
    assert segmenter.predictor.gate.classifier.weights.tolist() == refitted["weights"]
    assert segmenter.predictor.coverage_thresholds == profile["coverage_thresholds"]
    server = RunningServer(site_profile=str(profile_path), backend="onnx")
    try:
        card = httpx.get(f"{server.url}/info").json()
        assert card["card"]["site_profile"]["site"] == "dark-close-ups"
    finally:
        server.stop()


def test_a_profile_for_another_model_is_refused_in_our_words(calibrated, tmp_path):
    profile_path, _ = calibrated
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(profile_path.read_text()), "model_sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="fitted for another model"):
        lesionseg.load(backend="onnx", settings=Settings(site_profile=other))


@pytest.mark.parametrize(
    ("side", "words"), [(1, "case case00: "), (64, "0 of the 28 fitting cases have a lesion in their approved mask")]
)
def test_an_export_too_degenerate_to_support_a_profile_writes_none(tmp_path, side, words):
    """40 one-pixel cases with empty masks once gave review and coverage thresholds of 1.0 and a gate line 33
    times the model's: every flag off, and exit 0. One-pixel pictures are refused as uploads are; pictures of
    a fair size with nothing approved as lesion cannot certify any coverage."""
    export = tmp_path / "degenerate"
    (export / "images").mkdir(parents=True)
    (export / "masks").mkdir()
    for index in range(40):
        picture = np.full((side, side, 3), 40 + index, np.uint8)
        cv2.imwrite(str(export / "images" / f"case{index:02d}.jpg"), picture)
        cv2.imwrite(str(export / "masks" / f"case{index:02d}_segmentation.png"), np.zeros((side, side), np.uint8))
    profile = tmp_path / "site.json"
    completed = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "calibrate-site", str(export), "--output", str(profile)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 2 and not profile.exists()
    last = completed.stderr.strip().splitlines()[-1]
    assert words in last and "Traceback" not in completed.stderr, last


def broken_export(tmp_path, isic_validation_pairs, breakage: str) -> Path:
    """Twelve good cases of an export, and one broken as `breakage` says, named `broken`."""
    export = tmp_path / breakage
    (export / "images").mkdir(parents=True)
    (export / "masks").mkdir()
    for record in isic_validation_pairs[:12]:
        shutil.copy(record.image_path, export / "images" / f"{record.identifier}.jpg")
        shutil.copy(record.mask_path, export / "masks" / f"{record.identifier}_segmentation.png")
    image, mask = export / "images" / "broken.jpg", export / "masks" / "broken_segmentation.png"
    good = isic_validation_pairs[0]
    shutil.copy(good.mask_path, mask)
    if breakage == "mask-of-another-size":
        shutil.copy(good.image_path, image)
        cv2.imwrite(str(mask), np.zeros((7, 9), np.uint8))
    elif breakage == "device":
        image.symlink_to("/dev/zero")
    elif breakage == "pipe":
        os.mkfifo(image)
    elif breakage == "empty":
        image.write_bytes(b"")
    return export


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        ("mask-of-another-size", "its mask is 9×7 pixels"),
        ("device", "not a regular file"),
        ("pipe", "not a regular file"),
        ("empty", "empty"),
    ],
)
def test_a_broken_export_is_refused_naming_the_case(tmp_path, isic_validation_pairs, breakage, words):
    """A mask of another size was an IndexError traceback, /dev/zero 1.6 GB of memory in 2 s, a FIFO a hang
    and an empty image an error that named no file."""
    export = broken_export(tmp_path, isic_validation_pairs, breakage)
    completed = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "calibrate-site", str(export), "--output", str(tmp_path / "p.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert "case broken:" in last and words in last, last
