"""What users install is what is tested: the wheel, in a fresh virtual environment outside the source
tree, with the base dependencies only (ONNX Runtime, no PyTorch)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import pytest
from tests.conftest import REPOSITORY, RunningServer, decode_png

# Slow tier (`make test-fast` leaves it out): each test builds and installs the wheel in a fresh environment.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed as `pip install lesionseg-*.whl` would, pinned to the
    versions in requirements-onnx.txt; returns the environment's bin folder."""
    workspace = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", "dist"]
    subprocess.run([*build, str(REPOSITORY)], cwd=workspace, check=True, capture_output=True, timeout=300)
    (wheel,) = (workspace / "dist").glob("lesionseg-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "environment"], cwd=workspace, check=True, timeout=120)
    bin_folder = workspace / "environment" / "bin"
    completed = subprocess.run(
        [str(bin_folder / "pip"), "install", "--quiet", "-r", str(REPOSITORY / "requirements-onnx.txt"), str(wheel)],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return bin_folder


def test_the_wheel_installs_without_torch(installed):
    completed = subprocess.run([str(installed / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert completed.returncode != 0 and "No module named 'torch'" in completed.stderr


@pytest.fixture(scope="module")
def wheel_server(installed, tmp_path_factory):
    # Another folder, and no source tree on the path: only what the wheel put in site-packages.
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # With the review worklist on (an SQLite file there), so the installed migrations run too.
    environment["LESIONSEG_DATABASE_URL"] = f"sqlite:///{elsewhere / 'cases.db'}"
    server = RunningServer(environment=environment, command=[str(installed / "lesionseg")], cwd=elsewhere)
    yield server
    server.stop()


def test_the_installed_server_serves_its_page_with_script_and_style(wheel_server):
    page = httpx.get(f"{wheel_server.url}/")
    assert page.status_code == 200 and "static/page.js" in page.text
    for name, media_type in (("page.js", "javascript"), ("page.css", "text/css"), ("review.js", "javascript")):
        response = httpx.get(f"{wheel_server.url}/static/{name}")
        assert response.status_code == 200 and media_type in response.headers["content-type"], name


def test_the_installed_server_predicts_as_the_checkout_does(wheel_server, client, real_image_path):
    files = {"file": ("lesion.jpg", real_image_path.read_bytes(), "image/jpeg")}
    installed = httpx.post(f"{wheel_server.url}/predict/", files=files, params={"format": "mask", "seed": 0})
    checkout = client.post("/predict/", files=files, params={"format": "mask", "seed": 0})
    assert installed.headers["x-lesionseg-out-of-distribution"] == "false", "the gate's statistics are installed"
    # ONNX Runtime on both (auto), one with PyTorch installed beside it: the same masks, but for rare pixels at
    # exactly the threshold should the two installs' ONNX Runtime builds round differently.
    assert (decode_png(installed.content) != decode_png(checkout.content)).mean() < 1e-3
    info = httpx.get(f"{wheel_server.url}/info").json()
    assert info["card"]["out_of_distribution"]["statistics"] == "default.ood.npz"
    assert info["backend"]["name"] == "onnx" and info["backend"]["reason"].startswith("auto: ONNX Runtime on the")


def test_the_installed_server_reads_dicom_and_answers_with_a_segmentation(wheel_server, real_image_path):
    """pydicom, highdicom and the JPEG 2000 decoder come with the lean install: a hospital's file works there."""
    from pydicom.uid import JPEG2000Lossless
    from tests.dicom.pictures import wrap_rgb

    rgb = cv2.cvtColor(cv2.imread(str(real_image_path)), cv2.COLOR_BGR2RGB)
    files = {"file": ("picture.dcm", wrap_rgb(rgb, JPEG2000Lossless), "application/dicom")}
    for format, media_type in (("mask", "image/png"), ("dicom-seg", "application/dicom")):
        answer = httpx.post(
            f"{wheel_server.url}/predict/", files=files, params={"format": format, "seed": 0}, timeout=120
        )
        assert answer.status_code == 200 and answer.headers["content-type"] == media_type, (format, answer.text)


def test_the_python_api_works_in_the_installed_environment(installed, real_image_path, tmp_path):
    script = (
        "import sys, lesionseg\n"
        "result = lesionseg.load().predict(sys.argv[1], seed=0)\n"
        "print(result.mask.shape, result.out_of_distribution, result.to_json()['model']['name'])\n"
        "proposal = lesionseg.load().propose(sys.argv[1])\n"  # LiteMedSAM, also without torch
        "print(proposal.mask.shape == result.mask.shape, proposal.mask.any())\n"
    )
    completed = subprocess.run(
        [str(installed / "python"), "-c", script, str(real_image_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    height, width = cv2.imread(str(real_image_path)).shape[:2]
    assert completed.stdout.split() == [
        f"({height},",
        f"{width})",
        "False",
        "efficientnet_lite0_upernet",
        "True",
        "True",
    ]


def test_training_without_torch_says_which_extra_it_needs(installed, tmp_path):
    completed = subprocess.run(
        [str(installed / "lesionseg"), "train", "--epochs", "1"], capture_output=True, text=True, cwd=tmp_path
    )
    assert completed.returncode == 2
    assert "pip install 'lesionseg[train]'" in completed.stderr and "Traceback" not in completed.stderr


def test_the_installed_server_keeps_cases_in_its_database(wheel_server, real_image_path):
    files = {"file": ("lesion.jpg", real_image_path.read_bytes(), "image/jpeg")}
    created = httpx.post(f"{wheel_server.url}/cases", files=files, params={"seed": 0}, timeout=60)
    assert created.status_code == 201, created.text
    listed = httpx.get(f"{wheel_server.url}/cases", params={"status": "pending"}).json()["cases"]
    assert [case["id"] for case in listed] == [created.json()["id"]]
    assert httpx.get(f"{wheel_server.url}/review").status_code == 200


def test_the_installed_split_is_the_checkouts_with_its_near_duplicate_list(installed, data_root, tmp_path):
    from lesionseg.data.pairs import discover_pairs
    from lesionseg.data.splits import Split

    script = (
        "import sys; from lesionseg.data.pairs import discover_pairs; from lesionseg.data.splits import Split; "
        "print(' '.join(r.identifier for r in Split.for_training(0.1, 0).select(discover_pairs(sys.argv[1]), 'test')))"
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [str(installed / "python"), "-c", script, str(data_root / "isic2018")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    expected = Split.for_training(0.1, 0).select(discover_pairs(data_root / "isic2018"), "test")
    assert completed.stdout.split() == [record.identifier for record in expected]


def test_the_model_card_prints_in_the_lean_install(installed, tmp_path):
    completed = subprocess.run(
        [str(installed / "lesionseg"), "info"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    card = json.loads(completed.stdout)
    assert card["name"] == "efficientnet_lite0_upernet" and card["card"]["calibration"]["fitted_on"]["tta"] is True
    markdown = subprocess.run(
        [str(installed / "lesionseg"), "info", "--markdown"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert markdown.returncode == 0 and markdown.stdout.startswith("# "), markdown.stderr[-2000:]
