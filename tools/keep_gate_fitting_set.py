"""Keeps what a gate's classifier was fitted on in the gate's statistics file, so that sites can refit it.

`lesionseg calibrate-site` refits the gate's dermoscopy-vs-other classifier with a site's own dermoscopy added
(`evaluation/site.py`), which needs the descriptors the classifier was fitted on. `lesionseg calibrate-ood` now
keeps them in the statistics file; a gate fitted before it did (the shipped 0.5.0 gate) has only its Gaussian
and its classifier. This computes
them again as `calibrate-ood` did (the same training images, resolutions and camera shifts, the same
non-dermoscopic training pictures, which must be the set the sidecar names), finds the loss weight by the
same cross-validation, and adds them to the statistics file. The gate itself is unchanged: its arrays are
written back as they were, and every kept descriptor scores the same before and after (checked).

    python tools/build_ood_set.py /tmp/ood-training-set --training
    LESIONSEG_BACKEND=onnx python tools/keep_gate_fitting_set.py --negatives /tmp/ood-training-set

The backend is the one the gate was fitted with (the sidecar's command names it): ONNX Runtime for 0.5.x.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lesionseg.config import DEFAULT_WEIGHTS, Settings
from lesionseg.data.splits import Split
from lesionseg.evaluation.out_of_distribution import (
    fit_classifier,
    kept_fitting,
    kept_record,
    non_dermoscopic_descriptors,
    training_descriptors,
)
from lesionseg.model.sidecar import file_sha256, read_sidecar, sidecar_path, update_sidecar
from lesionseg.predictor import Predictor, load_gate
from lesionseg.training.options import TrainingOptions
from lesionseg.uncertainty.out_of_distribution import ClassifierFitting, OutOfDistributionGate


def keep_fitting_set(weights: Path, fitting: ClassifierFitting, command: str) -> dict:
    """Writes `fitting` into the gate's statistics file beside `weights` and the file's new sha256 into the
    sidecar; the gate's own arrays are written back unchanged. Returns the sidecar's new gate record."""
    sidecar = read_sidecar(weights)
    gate = load_gate(weights, sidecar)
    record = json.loads(sidecar_path(weights).read_text())["out_of_distribution"]  # as written, in its order
    statistics = Path(weights).with_name(record["statistics"])
    before = gate.scores(fitting.others)
    gate.save_statistics(statistics, fitting)
    after = OutOfDistributionGate.load(statistics, gate.threshold, gate.classifier_threshold).scores(fitting.others)
    if not np.array_equal(before, after):
        raise RuntimeError(f"{statistics.name} scores differently once rewritten; restore it from git")
    record["statistics_sha256"] = file_sha256(statistics)
    record["fitted_on"]["kept_for_site_refits"] = kept_record(fitting) | {"command": command}
    update_sidecar(weights, "out_of_distribution", record)
    return record


def main() -> None:
    defaults = TrainingOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--negatives", type=Path, required=True, help="tools/build_ood_set.py DIR --training")
    parser.add_argument("--data-root", type=Path, default=defaults.data_root)
    parser.add_argument("--sets", nargs="+", default=list(defaults.sets))
    parser.add_argument("--training-images", type=int, default=6000, help="as calibrate-ood was given")
    arguments = parser.parse_args()
    sidecar = read_sidecar(arguments.weights)
    fitted_on = sidecar.entry("out_of_distribution")["fitted_on"]
    if file_sha256(arguments.negatives / "manifest.csv") != fitted_on["non_dermoscopic_manifest_sha256"]:
        parser.error(f"{arguments.negatives} is not the non-dermoscopic set this gate was fitted on (manifest.csv)")
    predictor = Predictor.from_checkpoint(arguments.weights, Settings().backend)
    dermoscopy, _ = training_descriptors(
        predictor, arguments.data_root, arguments.sets, arguments.training_images, Split.of_model(sidecar.training)
    )
    if len(dermoscopy) != fitted_on["descriptors"]:
        parser.error(f"{len(dermoscopy)} training descriptors, where the gate was fitted on {fitted_on['descriptors']}")
    others, kinds = non_dermoscopic_descriptors(predictor, arguments.negatives)
    refitted, loss_weight = fit_classifier(dermoscopy, others, kinds)
    shipped = predictor.gate.classifier.weights
    agreement = float(refitted.weights @ shipped / np.linalg.norm(refitted.weights) / np.linalg.norm(shipped))
    print(f"the same cross-validation, run again, gives weights at cosine {agreement:.5f} to the gate's own")
    command = " ".join([f"LESIONSEG_BACKEND={predictor.backend_choice['name']} python", *sys.argv])
    record = keep_fitting_set(arguments.weights, kept_fitting(dermoscopy, others, loss_weight), command)
    statistics = Path(arguments.weights).with_name(record["statistics"])
    print(f"{statistics}: {statistics.stat().st_size / 1e6:.2f} MB; {record['fitted_on']['kept_for_site_refits']}")


if __name__ == "__main__":
    main()
