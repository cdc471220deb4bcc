"""A site profile's thresholds are checked before they are served: a NaN, a threshold out of (0, 1), a gate line
far from the model's, a missing entry, a file that is not a profile are refused in one line that names
LESIONSEG_SITE_PROFILE and the entry, by the Python API and by `lesionseg serve` before it starts."""

import json
import math
import os
import subprocess
import sys

import pytest
from tests.conftest import free_port

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.sidecar import CheckpointError, read_sidecar
from lesionseg.site_profile import PROFILE_FORMAT, read_site_profile, with_site_profile


def models_own_profile() -> dict:
    """A profile that changes nothing: the model's own thresholds."""
    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    gate = sidecar.out_of_distribution
    return {
        "format": PROFILE_FORMAT,
        "model_sha256": sidecar.sha256,
        "site": "unchanged",
        "review_threshold": sidecar.calibration.review_threshold,
        "coverage_thresholds": sidecar.coverage.thresholds,
        "out_of_distribution": {"threshold": gate.threshold, "classifier_threshold": gate.classifier_threshold},
    }


def with_change(entry: str, value) -> dict:
    profile = models_own_profile()
    if entry.startswith("out_of_distribution."):
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
]


def written(tmp_path, profile: dict):
    path = tmp_path / "site.json"
    path.write_text(json.dumps(profile))  # NaN and Infinity as Python's json writes them
    return path


def load(path):
    """As the service loads a profile: read, checked, laid over the model's sidecar."""
    return with_site_profile(read_sidecar(DEFAULT_WEIGHTS), read_site_profile(path), path)


def test_the_models_own_thresholds_make_a_valid_profile(tmp_path):
    sidecar = load(written(tmp_path, models_own_profile()))
    assert sidecar.calibration.review_threshold == read_sidecar(DEFAULT_WEIGHTS).calibration.review_threshold


@pytest.mark.parametrize(("entry", "value"), BROKEN)
def test_a_threshold_that_would_switch_a_flag_off_is_refused_naming_it(tmp_path, entry, value):
    with pytest.raises(CheckpointError) as refused:
        load(written(tmp_path, with_change(entry, value)))
    message = str(refused.value)
    assert message.startswith("LESIONSEG_SITE_PROFILE=") and "\n" not in message
    assert entry.split(".")[0] in message


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
@pytest.mark.parametrize(("entry", "value"), [BROKEN[0], BROKEN[6], BROKEN[8], ("review_threshold", None)])
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
    assert len(lines) == 1 and "LESIONSEG_SITE_PROFILE" in lines[0] and entry.split(".")[0] in lines[0], lines
