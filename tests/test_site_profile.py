"""A site profile's thresholds are checked before they are served: a NaN, a threshold out of (0, 1), a gate line
far from the model's, a missing entry, a file that is not a profile, a refitted classifier that is not finite or
not for this gate are refused in one line that names LESIONSEG_SITE_PROFILE and the entry, by the Python API and
by `lesionseg serve` before it starts. A profile of lines only, as 0.5.0 wrote them, still loads."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.conftest import free_port

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.sidecar import CheckpointError, read_sidecar
from lesionseg.predictor import load_gate, sidecar_and_gate
from lesionseg.site_profile import LINES_ONLY_FORMAT, PROFILE_FORMAT


def models_own_profile() -> dict:
    """A profile that changes nothing: the model's own thresholds, in the format 0.5.0 wrote."""
    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    gate = sidecar.out_of_distribution
    return {
        "format": LINES_ONLY_FORMAT,
        "model_sha256": sidecar.sha256,
        "site": "unchanged",
        "review_threshold": sidecar.calibration.review_threshold,
        "coverage_thresholds": sidecar.coverage.thresholds,
        "out_of_distribution": {"threshold": gate.threshold, "classifier_threshold": gate.classifier_threshold},
    }


def with_models_own_classifier() -> dict:
    """A profile whose refitted classifier is the model's own: what calibrate-site writes, changing nothing."""
    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    classifier = load_gate(DEFAULT_WEIGHTS, sidecar).classifier
    profile = models_own_profile() | {"format": PROFILE_FORMAT}
    profile["out_of_distribution"]["classifier"] = {
        "weights": classifier.weights.tolist(),
        "bias": classifier.bias,
        "statistics_sha256": sidecar.out_of_distribution.statistics_sha256,
    }
    return profile


def with_change(entry: str, value) -> dict:
    profile = with_models_own_classifier() if entry.startswith("out_of_distribution.classifier.") else None
    profile = profile or models_own_profile()
    if entry.startswith("out_of_distribution.classifier."):
        key = entry.split(".")[2]
        classifier = profile["out_of_distribution"]["classifier"]
        classifier[key] = classifier[key][:-1] + [value] if key == "weights" else value
    elif entry.startswith("out_of_distribution."):
        profile["out_of_distribution"][entry.partition(".")[2]] = value
    elif entry.startswith("coverage_thresholds."):
        profile["coverage_thresholds"] = {**profile["coverage_thresholds"], "0.90": value}
    elif value is None:
        del profile[entry]
    else:
        profile[entry] = value
    return profile


BROKEN = [
    ("review_threshold", math.nan),
    ("review_threshold", -1.0),
    ("review_threshold", 1e300),
    ("review_threshold", None),
    ("coverage_thresholds.0.90", math.nan),
    ("coverage_thresholds.0.90", -3.0),
    ("out_of_distribution.threshold", math.nan),
    ("out_of_distribution.threshold", 1e308),
    ("out_of_distribution.threshold", 1000 * read_sidecar(DEFAULT_WEIGHTS).out_of_distribution.threshold),
    ("out_of_distribution.classifier_threshold", math.inf),
    ("out_of_distribution.classifier.weights", math.nan),
    ("out_of_distribution.classifier.bias", -math.inf),
    ("out_of_distribution.classifier.statistics_sha256", "0" * 64),
]


def written(tmp_path, profile: dict):
    path = tmp_path / "site.json"
    path.write_text(json.dumps(profile))  # NaN and Infinity as Python's json writes them
    return path


def load(path):
    """As the service loads a profile: read, checked, laid over the model's sidecar and gate."""
    return sidecar_and_gate(DEFAULT_WEIGHTS, read_sidecar(DEFAULT_WEIGHTS), path)


def test_the_models_own_thresholds_make_a_valid_profile(tmp_path):
    sidecar, gate = load(written(tmp_path, models_own_profile()))
    assert sidecar.calibration.review_threshold == read_sidecar(DEFAULT_WEIGHTS).calibration.review_threshold
    assert not sidecar.entry("site_profile")["refitted_gate_classifier"]


def test_a_refitted_classifier_is_served_in_place_of_the_models_and_kept_out_of_the_card(tmp_path):
    profile = with_models_own_classifier()
    profile["out_of_distribution"]["classifier"]["bias"] += 1.0
    sidecar, gate = load(written(tmp_path, profile))
    model = load_gate(DEFAULT_WEIGHTS, read_sidecar(DEFAULT_WEIGHTS))
    probe = np.random.default_rng(0).normal(size=(3, len(model.classifier.weights)))
    assert np.allclose(gate.classifier.logits(probe), model.classifier.logits(probe) + 1.0)
    assert sidecar.entry("site_profile")["refitted_gate_classifier"]
    assert "classifier" not in sidecar.entry("out_of_distribution")  # /info shows the sidecar: no 768 weights


def test_a_refitted_classifier_of_another_length_or_in_a_lines_only_profile_is_refused_naming_it(tmp_path):
    shorter = with_models_own_classifier()
    shorter["out_of_distribution"]["classifier"]["weights"].pop()
    lines_only = with_models_own_classifier() | {"format": LINES_ONLY_FORMAT}
    for profile, words in [(shorter, "767 of them"), (lines_only, "lesionseg-site-profile/1 profile holds none")]:
        with pytest.raises(CheckpointError, match=words) as refused:
            load(written(tmp_path, profile))
        message = str(refused.value)
        assert message.startswith("LESIONSEG_SITE_PROFILE=") and "out_of_distribution.classifier" in message
        assert "\n" not in message


@pytest.mark.parametrize(("entry", "value"), BROKEN)
def test_a_threshold_that_would_switch_a_flag_off_is_refused_naming_it(tmp_path, entry, value):
    with pytest.raises(CheckpointError) as refused:
        load(written(tmp_path, with_change(entry, value)))
    message = str(refused.value)
    assert message.startswith("LESIONSEG_SITE_PROFILE=") and "\n" not in message
    assert ".".join(entry.split(".")[:2]) in message


def test_what_is_not_a_profile_is_refused_in_one_line(tmp_path):
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(models_own_profile())[:80])
    other = written(tmp_path, {**models_own_profile(), "model_sha256": "0" * 64})
    for path, words in [
        (tmp_path / "missing.json", "no such file"),
        (tmp_path, "no such file"),
        (truncated, "cannot be read as JSON"),
        (other, "fitted for another model"),
    ]:
        with pytest.raises(CheckpointError, match=words) as refused:
            load(path)
        assert str(refused.value).startswith(f"LESIONSEG_SITE_PROFILE={path}")


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "value"), [BROKEN[0], BROKEN[6], BROKEN[8], BROKEN[10], ("review_threshold", None)])
def test_serve_refuses_a_broken_profile_before_it_starts(tmp_path, entry, value):
    path = written(tmp_path, with_change(entry, value))
    started = subprocess.run(
        # A free port, not a fixed one: should a profile wrongly pass, the server that starts takes nobody's port.
        [sys.executable, "-m", "lesionseg.cli", "serve", "--port", str(free_port()), "--workers", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "LESIONSEG_SITE_PROFILE": str(path)},
        timeout=120,
    )
    assert started.returncode == 2
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and "LESIONSEG_SITE_PROFILE" in lines[0], lines
    assert ".".join(entry.split(".")[:2]) in lines[0], lines
