"""One archive image in, its output files and its row of the results table out.

The same code runs in the local engine and inside each Ray actor. It never writes to the output
folder: it returns the files' bytes, and the job's driver writes them, so an image that a killed
worker had half done is still written exactly once, by whichever attempt reports first.
"""

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from lesionseg.batch.processes import EncoderProcesses, ProcessDied, encode_outputs
from lesionseg.config import Settings
from lesionseg.imaging.decode import ImageRejected, read_image_file
from lesionseg.model.sidecar import read_sidecar
from lesionseg.predictor import Predictor
from lesionseg.segmenter import PredictionRequest, Segmenter

RESULT_COLUMNS = [
    "identifier",
    "path",
    "status",
    "error",
    "width",
    "height",
    "lesion_area_pixels",
    "lesion_area_fraction",
    "uncertainty_score",
    "review_recommended",
    "ood_score",
    "out_of_distribution",
    "read_ms",
    "decode_ms",
    "inference_ms",
    "encode_ms",
    "total_ms",
    "worker",
]


@dataclass(frozen=True)
class JobSettings:
    """What decides an image's outputs; a resumed job must use the same, or its table would mix runs."""

    weights: str
    backend: str = "auto"
    # A fixed seed (never drawn): rerunning a job, or resuming it, gives the same masks.
    request: PredictionRequest = PredictionRequest(seed=0)
    threads: int = 0  # per worker; 0 = the backend's choice
    # cpu or cuda (lesionseg.devices), resolved when the job starts: a GPU's bfloat16 moves boundary pixels.
    device: str = "cpu"
    # Also an overlay per image (the photo with the outline and the uncertainty), for a person to look through.
    overlay: bool = False

    def __post_init__(self) -> None:
        # Refused before the job starts, rather than as the same error in every image's row.
        if self.threads < 0:
            raise ValueError(f"threads must be 0 (the backend's choice) or more, got {self.threads}")
        if self.request.seed is None:
            raise ValueError("a batch job needs a fixed seed, so that a resumed job gives the same masks")
        if self.request.coverage is not None and read_sidecar(Path(self.weights)).coverage is None:
            raise ValueError("this model has no coverage calibration, so coverage cannot be guaranteed")


@dataclass
class ImageOutcome:
    row: dict
    files: dict[str, bytes] = field(default_factory=dict)  # path relative to the output folder -> bytes


def output_files(identifier: str, overlay: bool = False) -> dict[str, str]:
    """The ISIC 2018 Task 1 mask name, the 16-bit uncertainty map (value = std / 0.5 × 65535, which an image
    viewer shows nearly black: it is data), and, asked for, an 8-bit overlay to look at."""
    names = {
        "mask": f"masks/{identifier}_segmentation.png",
        "uncertainty": f"uncertainty/{identifier}_uncertainty.png",
    }
    if overlay:
        names["overlay"] = f"overlays/{identifier}_overlay.png"
    return names


def failed_row(identifier: str, path: str, error: str) -> dict:
    row = {column: "" for column in RESULT_COLUMNS}
    row.update(identifier=identifier, path=path, status="failed", error=error)
    return row


def error_text(error: Exception) -> str:
    """Our own words where we have them; a rejected image's reason is already ours."""
    if isinstance(error, ImageRejected):
        return error.message
    if isinstance(error, ProcessDied):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return f"the file cannot be read: {error.strerror}"
    return f"{type(error).__name__}: {error}"


def elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


class BatchWorker:
    def __init__(self, job: JobSettings, max_batch_size: int = 1, encoder_processes: int = 0) -> None:
        """`max_batch_size`: images segmented concurrently (from several threads) that may share a trunk run.
        `encoder_processes`: processes that encode the outputs (batch/processes.py); 0 encodes on the calling
        thread."""
        self.job = job
        self.settings = Settings()
        self.predictor = Predictor.from_checkpoint(
            Path(job.weights),
            job.backend,
            threads=job.threads,
            max_batch_size=max_batch_size,
            device=job.device,
            cuda_graphs=self.settings.cuda_graphs,
        )
        self.segmenter = Segmenter(self.predictor, self.settings)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.encoders = EncoderProcesses(encoder_processes) if encoder_processes else None

    def encode(self, result, names: dict[str, str], path: str) -> tuple[dict[str, bytes], int]:
        arguments = (result, names, path, 2 * self.predictor.input_size)
        return encode_outputs(*arguments) if self.encoders is None else self.encoders.run(encode_outputs, *arguments)

    def close(self) -> None:
        if self.encoders is not None:
            self.encoders.close()

    def segment(self, identifier: str, path: str) -> ImageOutcome:
        started = time.perf_counter()
        row = {column: "" for column in RESULT_COLUMNS}
        row.update(identifier=identifier, path=path, worker=self.worker)
        try:
            data = read_image_file(Path(path), self.settings.max_upload_bytes)
            row["read_ms"] = elapsed_ms(started)
            # An overlay's photo is decoded where it is encoded (encode_outputs), not here.
            result = self.segmenter.predict(data, self.job.request)
            timings = result.prediction.timings_ms
            row["decode_ms"] = timings["decode"]
            row["inference_ms"] = round(timings["preprocess"] + timings["inference"], 2)
            encode_started = time.perf_counter()
            files, area = self.encode(result, output_files(identifier, self.job.overlay), path)
            row["encode_ms"] = elapsed_ms(encode_started)
        except Exception as error:  # noqa: BLE001 - one bad image must never stop an archive's job
            # Unreadable files, rejected images and anything else go in the table, with the reason.
            row.update(status="failed", error=error_text(error), total_ms=elapsed_ms(started))
            return ImageOutcome(row)
        row.update(
            status="ok",
            width=result.width,
            height=result.height,
            lesion_area_pixels=area,
            lesion_area_fraction=round(area / (result.width * result.height), 6),
            uncertainty_score=round(result.score, 6),
            review_recommended=result.review_recommended,
            ood_score="" if result.ood_score is None else round(result.ood_score, 4),
            out_of_distribution="" if result.out_of_distribution is None else result.out_of_distribution,
            total_ms=elapsed_ms(started),
        )
        return ImageOutcome(row, files)
