"""A batch job's outputs encoded in processes: the same files as on the job's threads, on the real model and real
images, and a process that dies takes only its own image with it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lesionseg.batch.processes import EncoderProcesses, ProcessDied
from lesionseg.data.pairs import PairRecord

LESIONSEG = Path(sys.executable).parent / "lesionseg"
IMAGES = 4


def run_batch(input_folder: Path, output: Path, *options: str) -> None:
    completed = subprocess.run(
        [str(LESIONSEG), "batch", str(input_folder), str(output), "--backend", "onnx", *options],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def files_of(output: Path, folder: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((output / folder).iterdir())}


@pytest.mark.slow
def test_encoding_in_processes_writes_the_same_files_as_on_the_jobs_threads(
    isic_validation_pairs: list[PairRecord], tmp_path: Path
) -> None:
    """Byte for byte, overlays included; and an image's mask is the same with or without an overlay (the photo
    an overlay shows is decoded where it is encoded, so the model's picture is decoded one way for every job)."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for record in isic_validation_pairs[:IMAGES]:
        (archive / record.image_path.name).symlink_to(record.image_path.resolve())
    run_batch(archive, tmp_path / "threads", "--overlay", "--encoder-processes", "0")
    run_batch(archive, tmp_path / "processes", "--overlay", "--encoder-processes", "2")
    run_batch(archive, tmp_path / "plain", "--encoder-processes", "0")
    for folder in ("masks", "uncertainty", "overlays"):
        found = files_of(tmp_path / "processes", folder)
        assert len(found) == IMAGES and found == files_of(tmp_path / "threads", folder), folder
    assert files_of(tmp_path / "plain", "masks") == files_of(tmp_path / "processes", "masks")


def test_a_process_that_dies_fails_only_the_work_it_had():
    """A real process ending without an answer (as one killed for memory does): that work fails, in our words,
    after one more try in a new pool; the pool that replaced it takes the next work."""
    encoders = EncoderProcesses(1)
    try:
        with pytest.raises(ProcessDied, match="ended without an answer, twice"):
            encoders.run(os._exit, 3)
        assert encoders.run(pow, 2, 5) == 32
    finally:
        encoders.close()


def test_a_negative_number_of_encoder_processes_is_refused_in_one_line(tmp_path: Path) -> None:
    refused = subprocess.run(
        [str(LESIONSEG), "batch", str(tmp_path), str(tmp_path / "out"), "--encoder-processes", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--encoder-processes: must be a whole number of 0 or more" in refused.stderr
