"""The README's and the documentation's commands, run as written, so that they cannot go stale: each block
marked `<!-- readme-test: NAME -->` is read from README.md or a page of docs/ and run, in a fresh folder with a
real photo as `lesion.jpg`, the installed `lesionseg` on the PATH, and a real server where the block talks to
one."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tests.conftest import RunningServer, decode_png
from tests.dicom.pictures import wrap_jpeg

from lesionseg.data.pairs import discover_pairs
from lesionseg.data.splits import Split

# Slow tier (`make test-fast` leaves it out): CLI processes, a server, a training run.
pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "http://127.0.0.1:8000"


def documented_pages() -> list[Path]:
    return [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]


def readme_block(name: str) -> str:
    """The fenced (```) or indented (4 spaces) block after the marker `<!-- readme-test: NAME -->`, in the
    README or whichever documentation page holds it (each marker is in one place)."""
    marker = f"<!-- readme-test: {name} -->"
    (page,) = [path for path in documented_pages() if marker in path.read_text().splitlines()]
    lines = page.read_text().splitlines()
    start = lines.index(marker) + 1
    while not lines[start].strip():
        start += 1
    if lines[start].startswith("```"):
        end = lines.index("```", start + 1)
        return "\n".join(lines[start + 1 : end]) + "\n"
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip() + "\n"


def environment(**settings: str) -> dict[str, str]:
    """This interpreter's environment first on the PATH, as after `source .venv/bin/activate`."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **settings}


def run_shell(script: str, folder: Path, **settings: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=folder,
        env=environment(**settings),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, f"{script}\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return completed


@pytest.fixture
def folder(tmp_path, real_image_path) -> Path:
    (tmp_path / "lesion.jpg").write_bytes(real_image_path.read_bytes())
    # The same photo as a hospital's camera would store it, for the examples that read DICOM.
    (tmp_path / "lesion.dcm").write_bytes(wrap_jpeg(real_image_path.read_bytes()))
    return tmp_path


def test_the_python_example_runs(folder):
    completed = subprocess.run(
        [sys.executable, "-c", readme_block("python")], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_the_curl_examples_run_against_the_server(folder, server_url):
    completed = run_shell(readme_block("curl").replace(DEFAULT_ADDRESS, server_url), folder)
    width, height = Image.open(folder / "lesion.jpg").size
    assert decode_png((folder / "result.png").read_bytes()).shape[:2] == (height, 2 * width), "mask | heatmap"
    assert set(decode_png((folder / "lesion_segmentation.png").read_bytes()).ravel().tolist()) <= {0, 255}
    assert json.loads(completed.stdout)["mask_rle"]["counts"]


def test_the_readmes_own_examples_run(folder):
    completed = subprocess.run(
        [sys.executable, "-c", readme_block("quick-python")], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("Result(") and "uncertainty score" in completed.stdout
    run_shell(readme_block("quick-cli"), folder)
    for name in ("lesion_mask.png", "lesion_uncertainty.png", "lesion_combined.png"):
        assert (folder / "results" / name).is_file(), name


def test_every_marked_block_is_run_by_a_test():
    """A block marked in a page but read by no test would look tested and not be."""
    marked = {
        line.removeprefix("<!-- readme-test: ").removesuffix(" -->")
        for page in documented_pages()
        for line in page.read_text().splitlines()
        if line.startswith("<!-- readme-test: ")
    }
    source = Path(__file__).read_text()
    assert marked == set(re.findall(r'readme_block\("([\w-]+)"\)', source))


def test_the_cli_examples_report_and_write_their_files(folder):
    completed = run_shell(readme_block("cli"), folder)
    lines = completed.stdout.splitlines()
    assert any("lesion" in line and "results/lesion_mask.png" in line for line in lines), completed.stdout
    assert json.loads(next(line for line in lines if line.startswith("{")))["image"].endswith("lesion.jpg")
    summary = json.loads((folder / "archive" / "summary.json").read_text())
    assert summary["ok"] == 1 and summary["failed"] == 0


def test_the_training_try_runs_in_seconds(tmp_path, data_root):
    # The block reads the data from ../shared/data, as from a clone beside it.
    work = tmp_path / "clone"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_root.resolve())
    run_shell(readme_block("train"), work)
    assert (work / "runs" / "try" / "best.safetensors").is_file()


def test_the_review_recipe_runs_from_upload_to_a_training_run(folder):
    """The recipe's first shell serves; its second uploads, exports and trains. Here the upload runs four
    times, and a person's verdicts in the page are accepts over HTTP. The training line gets the try-it
    block's smoke-run flags, and a split seed that puts a case in each of training and validation (four
    cases split by a hash could otherwise leave one side empty, which training refuses in its own words)."""
    lines = [line.split("#")[0].strip() for line in readme_block("review").splitlines()]
    lines = [line for line in lines if line]
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", "\n".join(lines), re.MULTILINE))
    served = lines.index("lesionseg serve")
    second_shell = lines[served + 1 :]
    last_upload = max(number for number, line in enumerate(second_shell) if line.startswith("curl"))
    training = [line for line in second_shell if line.startswith("lesionseg train")]
    server = RunningServer(
        cwd=folder, database_url=exports["LESIONSEG_DATABASE_URL"], api_keys=exports["LESIONSEG_API_KEYS"]
    )
    try:
        upload = "\n".join(second_shell[: last_upload + 1]).replace(DEFAULT_ADDRESS, server.url)
        for _ in range(4):
            run_shell(upload, folder)
        headers = {"X-API-Key": re.search(r"reviewer:(\w+)", exports["LESIONSEG_API_KEYS"]).group(1)}
        for case in httpx.get(f"{server.url}/cases", headers=headers).json()["cases"]:
            verdict = {"status": "accepted", "version": 1}
            accepted = httpx.put(f"{server.url}/cases/{case['id']}/review", json=verdict, headers=headers)
            assert accepted.status_code == 200, accepted.text
        export = [line for line in second_shell[last_upload + 1 :] if line not in training]
        run_shell("\n".join(export), folder)
    finally:
        server.stop()
    reviewed = discover_pairs(folder / "exports" / "reviewed")
    assert len(reviewed) == 4
    seed = next(
        seed
        for seed in range(1000)
        if {Split.for_training(0.5, seed).subset_of(record) for record in reviewed} >= {"training", "validation"}
    )
    smoke = " --limit-pairs 4 --epochs 1 --samples-per-epoch 2 --batch-size 2 --loader-workers 0"
    smoke += f" --held-out-fraction 0.5 --split-seed {seed}"
    run_shell("\n".join(line + smoke for line in training), folder)
    assert list((folder / "runs").glob("*/best.safetensors"))
