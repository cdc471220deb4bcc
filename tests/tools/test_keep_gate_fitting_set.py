"""`tools/keep_gate_fitting_set.py`: the fitting set goes into a copy of the shipped gate's statistics file, the
gate scoring every picture as before, and the sidecar names the new file; a non-dermoscopic set other than the
one the gate was fitted on is refused before any picture is read."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.sidecar import file_sha256, read_sidecar, sidecar_path
from lesionseg.predictor import load_classifier_fitting, load_gate
from lesionseg.uncertainty.out_of_distribution import ClassifierFitting

TOOL = Path(__file__).parents[2] / "tools" / "keep_gate_fitting_set.py"


def tool_module():
    specification = importlib.util.spec_from_file_location("keep_gate_fitting_set", TOOL)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def copy_of_the_embedded_model(folder: Path) -> Path:
    weights = folder / DEFAULT_WEIGHTS.name
    for source in (DEFAULT_WEIGHTS, sidecar_path(DEFAULT_WEIGHTS), DEFAULT_WEIGHTS.with_suffix(".ood.npz")):
        (folder / source.name).write_bytes(source.read_bytes())
    return weights


def test_the_fitting_set_is_kept_and_the_gate_scores_as_before(tmp_path):
    weights = copy_of_the_embedded_model(tmp_path)
    before = load_gate(weights, read_sidecar(weights))
    generator = np.random.default_rng(0)
    width = len(before.summary.mean)
    fitting = ClassifierFitting(generator.normal(size=(20, width)), generator.normal(size=(5, width)) + 3, 123.0)
    record = tool_module().keep_fitting_set(weights, fitting, "a command")
    sidecar = read_sidecar(weights)
    statistics = weights.with_suffix(".ood.npz")
    assert record["statistics_sha256"] == sidecar.out_of_distribution.statistics_sha256 == file_sha256(statistics)
    assert record["fitted_on"]["kept_for_site_refits"]["command"] == "a command"
    after = load_gate(weights, sidecar)
    probe = np.concatenate([fitting.dermoscopy, fitting.others])
    assert np.array_equal(after.scores(probe), before.scores(probe))
    kept = load_classifier_fitting(weights, sidecar)
    assert kept.loss_weight == 123.0 and kept.others.shape == (5, width)
    # The sidecar's other entries, and the gate record's order, are as they were.
    original = json.loads(sidecar_path(DEFAULT_WEIGHTS).read_text())
    rewritten = json.loads(sidecar_path(weights).read_text())
    assert list(rewritten["out_of_distribution"]) == list(original["out_of_distribution"])
    assert {key: value for key, value in rewritten.items() if key != "out_of_distribution"} == {
        key: value for key, value in original.items() if key != "out_of_distribution"
    }


def test_another_non_dermoscopic_set_is_refused(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,group,source,licence,original_path\n")
    completed = subprocess.run(
        [sys.executable, str(TOOL), "--negatives", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2
    assert "is not the non-dermoscopic set this gate was fitted on" in completed.stderr.strip().splitlines()[-1]
