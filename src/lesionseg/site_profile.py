"""A site profile: one clinic's own thresholds for a model, refitted on its reviewed cases by
`lesionseg calibrate-site`, and laid over the model's sidecar when the service loads it
(`LESIONSEG_SITE_PROFILE`).

Conformal coverage and the gate's thresholds hold for images like the ones they were fitted on; another
clinic's camera breaks that. A profile replaces, for that clinic, what can be refitted without retraining:
the gate's two thresholds, the review threshold and the coverage thresholds. It belongs to one model: its
`model_sha256` must be the weights' own, or it is refused."""

import json
from pathlib import Path

from lesionseg.files import write_atomically
from lesionseg.model.sidecar import CheckpointError, Sidecar, file_sha256

PROFILE_FORMAT = "lesionseg-site-profile/1"


def write_site_profile(path: Path, profile: dict) -> None:
    write_atomically(path, (json.dumps({"format": PROFILE_FORMAT, **profile}, indent=2) + "\n").encode())


def read_site_profile(path: Path) -> dict:
    try:
        profile = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"site profile {path} cannot be read: {error}") from error
    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT:
        raise CheckpointError(f"{path} is not a site profile ({PROFILE_FORMAT}); lesionseg calibrate-site makes one")
    return profile


def with_site_profile(sidecar: Sidecar, profile: dict, profile_path: Path) -> Sidecar:
    """The sidecar with the profile's thresholds in place of the model's own, and a record of the profile."""
    if profile.get("model_sha256") != sidecar.sha256:
        raise CheckpointError(
            f"site profile {Path(profile_path).name} was fitted for another model (sha256 "
            f"{str(profile.get('model_sha256'))[:12]}…, this one is {sidecar.sha256[:12]}…); "
            "run lesionseg calibrate-site again for this model"
        )
    entries = {
        "calibration": {**(sidecar.entry("calibration") or {}), "review_threshold": profile["review_threshold"]},
        "coverage": {**(sidecar.entry("coverage") or {}), "thresholds": profile["coverage_thresholds"]},
        "site_profile": {
            "site": profile.get("site"),
            "file": Path(profile_path).name,
            "sha256": file_sha256(Path(profile_path)),
            "fitted_on": profile.get("fitted_on"),
        },
    }
    if sidecar.out_of_distribution is not None and "out_of_distribution" in profile:
        entries["out_of_distribution"] = {**sidecar.entry("out_of_distribution"), **profile["out_of_distribution"]}
    return sidecar.with_entries(**entries)
