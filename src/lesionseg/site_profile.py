"""A site profile: one clinic's own thresholds for a model, refitted on its reviewed cases by
`lesionseg calibrate-site`, and laid over the model's sidecar when the service loads it
(`LESIONSEG_SITE_PROFILE`).

Conformal coverage and the gate's thresholds hold for images like the ones they were fitted on; another
clinic's camera breaks that. A profile replaces, for that clinic, what can be refitted without retraining:
the gate's two thresholds and its classifier, the review threshold and the coverage thresholds. It belongs to one
model: its `model_sha256` must be the weights' own, or it is refused."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lesionseg.files import write_atomically
from lesionseg.model.sidecar import CheckpointError, Sidecar, file_sha256
from lesionseg.uncertainty.out_of_distribution import OutOfDistributionGate, surprise

# /2 may hold the gate's classifier refitted on the site's cases, and then its classifier_threshold is a line on
# that classifier's logits, which on the model's own would flag nearly nothing. A reader that knows only /1 must
# refuse such a profile rather than read its lines and miss its classifier; profiles without one still say /1,
# and every reader takes them.
PROFILE_FORMAT = "lesionseg-site-profile/2"
LINES_ONLY_FORMAT = "lesionseg-site-profile/1"
# How far a site's gate line may sit from the model's, either way: past it, the line is no line (1e308 once
# turned the not-dermoscopy flag off). Until `calibrate-site` refitted the classifier it raised both lines
# together until the site's own dermoscopy passed, and a simulated clinic of dark close-ups needed 23 times the
# model's; refitted, the same clinic's classifier line sits at 13.5 times the model's surprise and its distance
# line at the model's (docs/another-clinic.md), so the bound sits well above both.
GATE_LINE_FACTOR = 100.0
# Where the profile comes from, named in every refusal: the only way a profile reaches the service.
SETTING = "LESIONSEG_SITE_PROFILE"

Probability = Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class SiteClassifier(BaseModel):
    """The gate's classifier refitted on the site's cases: weights and bias on the model's own standardisation,
    which, with the fitting set, lies in the statistics file whose sha256 it names."""

    model_config = ConfigDict(extra="forbid")

    weights: list[Finite] = Field(min_length=1)
    bias: Finite
    statistics_sha256: str


class GateLines(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(gt=0.0, allow_inf_nan=False)  # a Mahalanobis distance
    classifier_threshold: float | None = Field(None, allow_inf_nan=False)  # a logit
    classifier: SiteClassifier | None = None


class SiteProfile(BaseModel):
    """What the service reads of a profile, with the ranges that keep its safety flags working: a NaN or
    out-of-range threshold silently turned a flag off (no review ever recommended, no picture ever flagged,
    empty or whole-image coverage masks). Other entries (`site`, `fitted_on`, `held_back`) are a record."""

    model_config = ConfigDict(extra="allow")

    format: Literal["lesionseg-site-profile/1", "lesionseg-site-profile/2"]
    model_sha256: str
    review_threshold: Probability
    coverage_thresholds: dict[str, Probability] = Field(min_length=1)
    out_of_distribution: GateLines | None = None

    @field_validator("coverage_thresholds")
    @classmethod
    def coverage_levels_are_probabilities(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for level in thresholds:
            try:
                value = float(level)
            except ValueError:
                raise ValueError(f"coverage level {level!r} is not a number") from None
            if not 0.0 < value < 1.0:
                raise ValueError(f"coverage level {level!r} is not between 0 and 1")
        return thresholds


def refusal(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{SETTING}={path}: {what}")


def problem_text(error: ValidationError) -> str:
    """Pydantic's first problem, in one line, as `entry: what is wrong (it is X)`."""
    problem = error.errors()[0]
    entry = ".".join(map(str, problem["loc"])) or "the profile"
    found = f" (it is {problem['input']!r})" if problem["type"] != "missing" else ""
    return f"{entry}: {problem['msg'].removeprefix('Value error, ').lower()}{found}"


def profile_format(profile: dict) -> str:
    """The oldest format that holds `profile`, so that readers of /1 still take a profile of lines only."""
    return PROFILE_FORMAT if (profile.get("out_of_distribution") or {}).get("classifier") else LINES_ONLY_FORMAT


def write_site_profile(path: Path, profile: dict) -> None:
    write_atomically(path, (json.dumps({"format": profile_format(profile), **profile}, indent=2) + "\n").encode())


def read_site_profile(path: Path) -> dict:
    """The profile at `path`, checked; CheckpointError in one line naming the setting and the entry."""
    path = Path(path)
    if not path.is_file():
        raise refusal(path, "no such file (a profile is the JSON file `lesionseg calibrate-site` writes)")
    try:
        profile = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise refusal(path, f"cannot be read as JSON (it breaks at character {error.pos})") from None
    except (OSError, ValueError) as error:
        raise refusal(path, f"cannot be read ({getattr(error, 'strerror', None) or 'not UTF-8 text'})") from None
    if not isinstance(profile, dict) or profile.get("format") not in (LINES_ONLY_FORMAT, PROFILE_FORMAT):
        raise refusal(path, f"not a site profile ({PROFILE_FORMAT}); lesionseg calibrate-site makes one")
    try:
        SiteProfile.model_validate(profile)
    except ValidationError as error:
        raise refusal(path, problem_text(error)) from None
    return profile


def gate_line_problem(lines: dict, sidecar: Sidecar) -> str | None:
    """What is wrong with the site's gate lines, if anything: each must lie within GATE_LINE_FACTOR of the
    model's own, on its own scale: the distance as it is, the classifier's logit as its surprise
    (−log P(dermoscopy)), which grows as the logit does. A refitted classifier's line is bounded above only: its
    logits are its own, and a low line flags more, never less."""
    model = sidecar.out_of_distribution
    pairs = [("threshold", lines["threshold"], model.threshold, 1 / GATE_LINE_FACTOR)]
    if lines.get("classifier_threshold") is not None and model.classifier_threshold is not None:
        pairs.append(
            (
                "classifier_threshold",
                float(surprise(lines["classifier_threshold"])),
                float(surprise(model.classifier_threshold)),
                0.0 if lines.get("classifier") else 1 / GATE_LINE_FACTOR,
            )
        )
    for name, site, own, lowest in pairs:
        if not own * lowest <= site <= own * GATE_LINE_FACTOR:
            return (
                f"out_of_distribution.{name} is {site / own:.3g} times the model's; a site's gate line may be at "
                f"most {GATE_LINE_FACTOR:g} times above or below it, or the not-dermoscopy flag stops working"
            )
    return None


def profile_problem(profile: dict, sidecar: Sidecar) -> str | None:
    """What would make `profile` unsafe to serve with this model, in one line; None if nothing. What
    `calibrate-site` checks before it writes a profile, and the service before it serves one."""
    try:
        SiteProfile.model_validate(profile)
    except ValidationError as error:
        return problem_text(error)
    lines = profile.get("out_of_distribution")
    if lines and lines.get("classifier"):
        model = sidecar.out_of_distribution
        if profile["format"] == LINES_ONLY_FORMAT:
            return f"out_of_distribution.classifier: a {LINES_ONLY_FORMAT} profile holds none ({PROFILE_FORMAT} does)"
        if model is None or model.classifier_threshold is None:
            return "out_of_distribution.classifier: this model's gate has no classifier to replace"
        fitted_with = lines["classifier"]["statistics_sha256"]
        if fitted_with != model.statistics_sha256:
            return (
                f"out_of_distribution.classifier: fitted with another gate's statistics (sha256 {fitted_with[:12]}…, "
                f"this model's are {model.statistics_sha256[:12]}…); run lesionseg calibrate-site again"
            )
    if sidecar.out_of_distribution is not None and lines:
        return gate_line_problem(lines, sidecar)
    return None


def with_site_profile(sidecar: Sidecar, profile: dict, profile_path: Path) -> Sidecar:
    """The sidecar with the profile's thresholds in place of the model's own, and a record of the profile."""
    if profile.get("model_sha256") != sidecar.sha256:
        raise refusal(
            profile_path,
            f"fitted for another model (sha256 {str(profile.get('model_sha256'))[:12]}…, this one is "
            f"{sidecar.sha256[:12]}…); run lesionseg calibrate-site again for this model",
        )
    if (problem := profile_problem(profile, sidecar)) is not None:
        raise refusal(profile_path, problem)
    lines = dict(profile.get("out_of_distribution") or {})
    entries = {
        "calibration": {**(sidecar.entry("calibration") or {}), "review_threshold": profile["review_threshold"]},
        "coverage": {**(sidecar.entry("coverage") or {}), "thresholds": profile["coverage_thresholds"]},
        "site_profile": {
            "site": profile.get("site"),
            "file": Path(profile_path).name,
            "sha256": file_sha256(Path(profile_path)),
            "fitted_on": profile.get("fitted_on"),
            # Its weights stay out of the sidecar, which /info shows; `with_site_classifier` puts them in the gate.
            "refitted_gate_classifier": lines.pop("classifier", None) is not None,
        },
    }
    if sidecar.out_of_distribution is not None and lines:
        entries["out_of_distribution"] = {**sidecar.entry("out_of_distribution"), **lines}
    return sidecar.with_entries(**entries)


def with_site_classifier(
    gate: OutOfDistributionGate | None, profile: dict, profile_path: Path
) -> OutOfDistributionGate | None:
    """The gate (already with the profile's lines) with the profile's refitted classifier in place of the
    model's, where the profile has one; `with_site_profile` has checked it is for this gate."""
    refitted = (profile.get("out_of_distribution") or {}).get("classifier")
    if refitted is None or gate is None:
        return gate
    if len(refitted["weights"]) != len(gate.classifier.weights):
        raise refusal(
            profile_path,
            f"out_of_distribution.classifier.weights: {len(refitted['weights'])} of them, where this model's "
            f"descriptor has {len(gate.classifier.weights)} numbers",
        )
    classifier = replace(gate.classifier, weights=np.array(refitted["weights"]), bias=float(refitted["bias"]))
    return replace(gate, classifier=classifier)
