"""LiteMedSAM on ONNX Runtime: a box around a lesion in, a proposed mask out. No torch.

The image is encoded once (the expensive part, about a second on two cores) and its embedding kept; each box
after that costs only the small prompt-and-mask decoder. Preprocessing follows LiteMedSAM's own inference:
the longest side resized to 256, intensities stretched to 0-1 over the image, zero padding to a 256 square
at the bottom and right; the box scaled into that frame; the decoder's 256-square logits cropped to the
image's part and resized back to the image.
"""

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from lesionseg.imaging.bands import MapBands
from lesionseg.imaging.regions import bounding_box
from lesionseg.model.sidecar import CheckpointError, file_sha256

PROPOSER_NAME = "litemedsam"
PROPOSER_DIRECTORY = Path(__file__).resolve().parent.parent / "weights"  # beside the embedded model
ENCODER_SIZE = 256
EMBEDDING_SHAPE = (256, 64, 64)
# Embeddings kept, most recently used first: 4 MB each, so a reviewer can go back and forth between a few cases
# and each further box costs only the decoder.
KEPT_EMBEDDINGS = 8


class InvalidBox(ValueError):
    """A box that encloses no part of the image: answered 422 with this message."""


def proposer_sidecar_path(directory: Path) -> Path:
    return Path(directory) / f"{PROPOSER_NAME}.json"


@dataclass(frozen=True)
class ImageEmbedding:
    """What the encoder made of one image, and the geometry to map boxes in and masks out."""

    embedding: np.ndarray  # 1×256×64×64 float32
    image_size: tuple[int, int]  # (height, width) of the image the masks are for
    resized_size: tuple[int, int]  # (height, width) inside the 256 square
    seconds: float  # the encoder's time when it was made
    kept: bool = False  # taken from the kept embeddings, at no cost this time


@dataclass(frozen=True)
class Proposal:
    # The decoder's logits, resized to the image a band of rows at a time: at 64 megapixels a whole float map
    # would be 256 MB, and the mask needs only their sign.
    logits: MapBands
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels, as used
    predicted_iou: float  # the decoder's own estimate of the mask's quality
    seconds: float  # the decoder's time
    embedding_seconds: float  # the encoder's, when the image's embedding was made
    embedding_kept: bool  # the embedding was kept from an earlier box: it cost nothing this time

    @cached_property
    def mask(self) -> np.ndarray:
        """height×width bool: probability over 0.5, that is, a positive logit."""
        mask = np.empty(self.logits.shape, bool)
        for rows, band in self.logits:
            np.greater(band, 0, out=mask[rows])
        return mask

    @property
    def probability(self) -> np.ndarray:
        """height×width float32, the sigmoid of the logits, made whole on demand."""
        logits = self.logits.whole()
        return (0.5 * (1 + np.tanh(0.5 * logits))).astype(np.float32)  # the sigmoid, without exp's overflow


def resized_size(height: int, width: int) -> tuple[int, int]:
    scale = ENCODER_SIZE / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def encoder_input(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image (H×W×3) as the encoder takes it: 1×3×256×256 float32."""
    new_height, new_width = resized_size(*image.shape[:2])
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA).astype(np.float32)
    low, high = float(resized.min()), float(resized.max())
    resized = (resized - low) / max(high - low, 1e-8)
    square = np.zeros((ENCODER_SIZE, ENCODER_SIZE, 3), np.float32)
    square[:new_height, :new_width] = resized
    return np.ascontiguousarray(square.transpose(2, 0, 1)[None])


def box_around(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (ends exclusive) around a mask's pixels; the whole image when it has none."""
    box = bounding_box(mask)
    if box is None:
        return 0, 0, mask.shape[1], mask.shape[0]
    x, y, width, height = box
    return x, y, x + width, y + height


def checked_box(box, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 clipped to the image; an InvalidBox in our words where nothing of the image is left."""
    height, width = image_size
    if len(box) != 4 or not all(np.isfinite(float(value)) for value in box):
        raise InvalidBox("a box is four finite numbers: [x0, y0, x1, y1] in image pixels")
    x0, y0, x1, y1 = (float(value) for value in box)
    x0, x1 = max(0.0, x0), min(float(width), x1)
    y0, y1 = max(0.0, y0), min(float(height), y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise InvalidBox(
            f"the box must enclose part of the {width}×{height} image, with x0 < x1 and y0 < y1 (image pixels)"
        )
    return x0, y0, x1, y1


class BoxProposer:
    """LiteMedSAM's two graphs, checked against their sidecar's sha256 when first used."""

    def __init__(self, directory: Path = PROPOSER_DIRECTORY, threads: int = 0):
        self.directory = Path(directory)
        self.threads = threads
        self._lock = threading.Lock()
        self._sessions = None
        self._kept: OrderedDict[str, ImageEmbedding] = OrderedDict()

    @cached_property
    def sidecar(self) -> dict:
        import json

        path = proposer_sidecar_path(self.directory)
        if not path.is_file():
            raise CheckpointError(f"no box-prompted proposer in {self.directory} ({path.name} is missing)")
        return json.loads(path.read_text())

    @property
    def name(self) -> str:
        return self.sidecar["name"]

    def _session(self, part: str):
        import onnxruntime

        from lesionseg.backends.onnx_backend import session_options

        entry = self.sidecar["onnx"][part]
        path = self.directory / entry["file"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{path.name} is missing or does not match its sidecar's sha256")
        options = session_options(self.threads)
        # ONNX Runtime's CPU arena grows by each concurrent run's working memory and never gives it back: one
        # proposal took a process from 102 to 518 MB and four at once to 1,636 MB, kept while idle. Without it
        # the encoder's buffers are freed after each run (254 and 266 MB; 212 MB idle), at no cost in speed
        # measured here (2.7-3.0 s a proposal either way, on 2 cores).
        options.enable_cpu_mem_arena = False
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def sessions(self):
        # Loaded on the first proposal, not at start-up: most requests never ask for one.
        with self._lock:
            if self._sessions is None:
                self._sessions = self._session("encoder"), self._session("decoder")
            return self._sessions

    def embed(self, image: np.ndarray, image_size: tuple[int, int] | None = None) -> ImageEmbedding:
        """`image` (RGB uint8) encoded. `image_size` (height, width) is the size the masks are wanted at, when
        `image` is a reduced decode of a larger photo; by default the image's own."""
        return self._encode(encoder_input(image), image.shape[:2], image_size)

    def kept_embedding(self, image: np.ndarray, image_size: tuple[int, int] | None = None) -> ImageEmbedding:
        """`embed`, remembered for the next box on the same image. Keyed by the encoder's input, which is all
        the embedding depends on: 0.8 MB to hash, where the photo itself is tens of megabytes."""
        square = encoder_input(image)
        key = hashlib.sha256(square.tobytes()).hexdigest() + repr((image.shape[:2], image_size))
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                return replace(kept, kept=True)
        embedding = self._encode(square, image.shape[:2], image_size)
        with self._lock:
            self._kept[key] = embedding
            while len(self._kept) > KEPT_EMBEDDINGS:
                self._kept.popitem(last=False)
        return embedding

    def _encode(self, square: np.ndarray, shape: tuple[int, int], image_size: tuple[int, int] | None) -> ImageEmbedding:
        started = time.perf_counter()
        encoder, _ = self.sessions()
        (embedding,) = encoder.run(None, {"image": square})
        seconds = time.perf_counter() - started
        return ImageEmbedding(embedding, tuple(image_size or shape), resized_size(*shape), seconds)

    def propose(self, embedding: ImageEmbedding, box) -> Proposal:
        started = time.perf_counter()
        box = checked_box(box, embedding.image_size)
        height, width = embedding.image_size
        scale = ENCODER_SIZE / max(height, width)
        _, decoder = self.sessions()
        logits, predicted_iou = decoder.run(
            None,
            {"image_embedding": embedding.embedding, "box": (np.array([box], np.float32) * scale)},
        )
        new_height, new_width = embedding.resized_size
        logits = MapBands(np.ascontiguousarray(logits[0, 0, :new_height, :new_width]), width, height)
        seconds = time.perf_counter() - started
        return Proposal(
            logits,
            box,
            float(predicted_iou.reshape(-1)[0]),
            seconds,
            embedding.seconds,
            embedding.kept,
        )
