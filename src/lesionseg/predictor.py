"""One image in, the mask and its uncertainty out, at the image's own size.

This is the only place that joins preprocessing, the model and MC sampling; the HTTP layer and the
CLI both call it, so they cannot drift apart.
"""

import importlib.util
import secrets
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from lesionseg.backends.batching import TrunkBatcher
from lesionseg.defaults import DEFAULT_SAMPLES, DEFAULT_THRESHOLD, DEFAULT_TTA
from lesionseg.devices import check_device_name, wants_cuda
from lesionseg.imaging import preprocess
from lesionseg.imaging.bands import MapBands
from lesionseg.model.config import ModelConfig
from lesionseg.model.sidecar import (
    CheckpointError,
    Sidecar,
    config_from_sidecar,
    file_sha256,
    onnx_paths,
    read_sidecar,
)
from lesionseg.site_profile import read_site_profile, with_site_classifier, with_site_profile
from lesionseg.uncertainty.coverage import threshold_for_coverage
from lesionseg.uncertainty.out_of_distribution import ClassifierFitting, OutOfDistributionGate
from lesionseg.uncertainty.sampling import (
    Backend,
    UncertaintyMaps,
    check_samples,
    draw_channel_masks,
    sample_tail,
    summarise,
)
from lesionseg.uncertainty.scores import expected_dice_error


@dataclass
class Prediction:
    """One image's result. The maps come at the original image's size (H×W float32), resized from
    the model's resolution only when first asked for, and by the outputs a band at a time (`bands`):
    at 64 megapixels a whole map is 256 MB."""

    model_maps: UncertaintyMaps  # 1×S×S, at the model's resolution
    width: int
    height: int
    samples: int
    seed: int
    threshold: float
    uncertainty_score: float
    # None when the checkpoint has no out-of-distribution gate: unknown, never a silent "in domain".
    ood_score: float | None = None
    # The coverage whose conformal threshold made the mask (None: the plain `threshold` did).
    coverage: float | None = None
    # The trunk's image descriptor, which the gate scored (None when the trunk gives none).
    descriptor: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def out_of_distribution(self) -> bool | None:
        return None if self.ood_score is None else self.ood_score >= 1.0

    def review_recommended(self, review_threshold: float) -> bool:
        """A person should look: the model is unsure of the outline, or the image is not what it knows."""
        return self.uncertainty_score >= review_threshold or bool(self.out_of_distribution)

    def bands(self, name: str) -> MapBands:
        """`mean_probability`, `uncertainty_std` or `predictive_entropy` at the image's size, by bands."""
        return MapBands(getattr(self.model_maps, name)[0], self.width, self.height)

    @cached_property
    def mean_probability(self) -> np.ndarray:
        return self.bands("mean_probability").whole()

    @cached_property
    def uncertainty_std(self) -> np.ndarray:
        return self.bands("uncertainty_std").whole()

    @cached_property
    def predictive_entropy(self) -> np.ndarray:
        return self.bands("predictive_entropy").whole()

    @cached_property
    def mask(self) -> np.ndarray:
        mask = np.empty((self.height, self.width), bool)
        for rows, band in self.bands("mean_probability"):
            np.greater_equal(band, self.threshold, out=mask[rows])
        return mask


def has_onnx_graphs(weights_path: Path) -> bool:
    """Whether the checkpoint's sidecar records an ONNX export of these very weights and both graphs lie beside
    it (their checksums are checked when they load)."""
    try:
        sidecar = read_sidecar(weights_path)
    except (CheckpointError, OSError):  # no sidecar (a pickled seed checkpoint), or one that cannot be read
        return False
    exported = sidecar.onnx
    return (
        exported is not None
        and exported.weights_sha256 == sidecar.sha256
        and all(path.is_file() for path in onnx_paths(weights_path))
    )


def choose_backend(requested: str, weights_path: Path, device: str = "auto") -> dict[str, str]:
    """{"name", "reason"}: the backend `requested` means for these weights, and why, in a sentence for `/info`.
    "auto" is PyTorch where the device is a GPU; else ONNX Runtime on the checkpoint's float32 graphs wherever
    they were exported (the same model as PyTorch, to float rounding: faster on every CPU measured, and
    lighter), else PyTorch. Never int8, which moves a few boundary pixels: that is asked for by name."""
    check_device_name(device)
    if requested not in ("auto", "pytorch") and device.startswith("cuda"):
        raise ValueError(
            f"LESIONSEG_DEVICE / --device {device}: only the PyTorch backend runs on a GPU; --backend {requested} "
            "runs on the CPU (give --backend pytorch, or --device cpu)"
        )
    if requested != "auto":
        return {"name": requested, "reason": f"asked for by name ({requested})"}
    if wants_cuda(device):
        if importlib.util.find_spec("torch") is None:
            raise ValueError(
                f"LESIONSEG_DEVICE / --device {device}: a GPU runs the model through PyTorch, which this install "
                "does not have: pip install 'lesionseg[torch]' (or --device cpu)"
            )
        return {"name": "pytorch", "reason": "auto: a CUDA GPU is visible, and PyTorch runs the model on it"}
    if has_onnx_graphs(weights_path):
        return {
            "name": "onnx",
            "reason": "auto: ONNX Runtime on the checkpoint's float32 graphs, the same model as PyTorch and faster "
            "on a CPU",
        }
    if importlib.util.find_spec("torch") is not None:
        return {
            "name": "pytorch",
            "reason": "auto: the checkpoint has no ONNX graphs of these weights (`lesionseg export-onnx` writes "
            "them), so PyTorch",
        }
    return {"name": "onnx", "reason": "auto: PyTorch is not installed (the lean install), so ONNX Runtime"}


def resolve_backend(backend: str, weights_path: Path, device: str = "auto") -> str:
    return choose_backend(backend, weights_path, device)["name"]


# The module each backend cannot run without (and which an optional extra installs).
BACKEND_MODULES = {"pytorch": "torch", "openvino": "openvino", "openvino-f32": "openvino", "openvino-int8": "openvino"}


def check_backend_installed(backend: str, weights_path: Path, device: str = "auto") -> str:
    """The backend `backend` resolves to here; ModuleNotFoundError, naming the module, if it cannot run here:
    checked before a server starts its workers, where the error would otherwise end as a traceback in each of
    them. A GPU asked for by name is looked for now too (ValueError in one line where PyTorch sees none)."""
    resolved = resolve_backend(backend, weights_path, device)
    module = BACKEND_MODULES.get(resolved)
    if module is not None:
        importlib.import_module(module)
    if resolved == "pytorch" and device.startswith("cuda"):
        from lesionseg.backends.pytorch_backend import resolve_device

        resolve_device(device)
    return resolved


def load_backend(
    weights_path: Path, backend: str, allow_pickle: bool, threads: int, device: str = "auto", cuda_graphs: bool = False
) -> tuple[Backend, Sidecar]:
    """The torch import stays inside the PyTorch branch, so an ONNX-only install never needs it."""
    backend = resolve_backend(backend, weights_path, device)
    if backend in ("onnx", "onnx-int8"):
        from lesionseg.backends.onnx_backend import OnnxBackend

        sidecar = read_sidecar(weights_path)
        return OnnxBackend(weights_path, sidecar, threads, int8_trunk=backend == "onnx-int8"), sidecar
    if backend in ("openvino", "openvino-f32", "openvino-int8"):
        from lesionseg.backends.openvino_backend import OpenVinoBackend

        sidecar = read_sidecar(weights_path)
        precision = "f32" if backend == "openvino-f32" else "auto"
        int8_trunk = backend == "openvino-int8"
        return OpenVinoBackend(weights_path, sidecar, threads, precision, int8_trunk), sidecar
    if backend != "pytorch":
        raise ValueError(
            f"unknown backend {backend!r}; use auto, pytorch, onnx, onnx-int8, openvino, openvino-f32 or openvino-int8"
        )
    from lesionseg.backends.pytorch_backend import TorchBackend
    from lesionseg.model.checkpoint import load_checkpoint

    model, sidecar = load_checkpoint(weights_path, allow_pickle=allow_pickle)
    return TorchBackend(model, sidecar.architecture["input_size"], threads, device, cuda_graphs=cuda_graphs), sidecar


def flipped_views(batch: np.ndarray) -> np.ndarray:
    """1×3×S×S -> 3×3×S×S: the image, flipped left-right, flipped upside down."""
    return np.concatenate([batch, batch[..., ::-1], batch[..., ::-1, :]]).copy()


def pooled_views(logits: np.ndarray) -> np.ndarray:
    """3×T×S×S logits of `flipped_views` -> 1×3T×S×S, each view flipped back onto the image."""
    unflipped = [logits[0], logits[1][..., ::-1], logits[2][..., ::-1, :]]
    return np.concatenate(unflipped)[None].copy()


def gate_statistics(weights_path: Path, sidecar: Sidecar) -> Path:
    """The gate's statistics file beside the weights, checked against the sidecar's sha256."""
    statistics = Path(weights_path).with_name(sidecar.out_of_distribution.statistics)
    if not statistics.is_file() or file_sha256(statistics) != sidecar.out_of_distribution.statistics_sha256:
        raise CheckpointError(f"{statistics.name} is missing or does not match the sidecar's sha256")
    return statistics


def load_gate(weights_path: Path, sidecar: Sidecar) -> OutOfDistributionGate | None:
    """The gate `lesionseg calibrate-ood` fitted, from the statistics file beside the weights; None
    for a checkpoint that has none."""
    record = sidecar.out_of_distribution
    if record is None:
        return None
    return OutOfDistributionGate.load(
        gate_statistics(weights_path, sidecar), record.threshold, record.classifier_threshold
    )


def load_classifier_fitting(weights_path: Path, sidecar: Sidecar) -> ClassifierFitting | None:
    """What the gate's classifier was fitted on, for `calibrate-site` to refit it; None for a checkpoint without
    a gate, or a statistics file from before it was kept there (tools/keep_gate_fitting_set.py adds it)."""
    if sidecar.out_of_distribution is None:
        return None
    return ClassifierFitting.load(gate_statistics(weights_path, sidecar))


def sidecar_and_gate(
    weights_path: Path, sidecar: Sidecar, site_profile: Path | None
) -> tuple[Sidecar, OutOfDistributionGate | None]:
    """The sidecar and the gate, with a site profile's thresholds and refitted classifier in place of the model's
    where one is given; CheckpointError in one line where the profile is not one to serve with these weights."""
    if site_profile is None:
        return sidecar, load_gate(weights_path, sidecar)
    profile = read_site_profile(site_profile)
    sidecar = with_site_profile(sidecar, profile, site_profile)
    return sidecar, with_site_classifier(load_gate(weights_path, sidecar), profile, site_profile)


class Predictor:
    """Holds the loaded backend. Inference is serialised, the backend's threads using every core;
    concurrent requests share trunk runs of up to `max_batch_size` images."""

    def __init__(
        self,
        backend: Backend,
        sidecar: Sidecar,
        max_batch_size: int = 1,
        gate: OutOfDistributionGate | None = None,
        backend_choice: dict[str, str] | None = None,
    ) -> None:
        self.backend = backend
        # {"name", "reason"}: which backend serves and why, for /info; None where a caller built the backend.
        self.backend_choice = backend_choice
        self.batcher = TrunkBatcher(backend, max_batch_size)
        self.sidecar = sidecar
        self.config: ModelConfig = config_from_sidecar(sidecar)
        self.temperature = sidecar.calibration.temperature
        self.gate = gate
        self.coverage_thresholds: dict[str, float] = sidecar.coverage.thresholds if sidecar.coverage else {}

    @classmethod
    def from_checkpoint(
        cls,
        weights_path: Path,
        backend: str = "pytorch",
        allow_pickle: bool = False,
        threads: int = 0,
        max_batch_size: int = 1,
        site_profile: Path | None = None,
        device: str = "auto",
        cuda_graphs: bool = False,
    ) -> "Predictor":
        """`site_profile`: a clinic's own thresholds for this model (`lesionseg calibrate-site`), in place of the
        sidecar's. `device`: where the PyTorch backend runs (lesionseg.devices); `cuda_graphs`: there, replayed
        as CUDA graphs (Settings.cuda_graphs)."""
        choice = choose_backend(backend, weights_path, device)
        loaded_backend, sidecar = load_backend(weights_path, choice["name"], allow_pickle, threads, device, cuda_graphs)
        # Where it runs and in what precision, for /info: a GPU's bfloat16 moves a few boundary pixels.
        choice = {**choice, **loaded_backend.placement}
        sidecar, gate = sidecar_and_gate(weights_path, sidecar, site_profile)
        return cls(loaded_backend, sidecar, max_batch_size, gate, choice)

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def identity(self) -> dict[str, str]:
        return {"name": self.config.name, "version": self.sidecar.version, "sha256": self.sidecar.sha256}

    @property
    def model_card(self) -> dict:
        """The sidecar less its per-image detail: architecture, training, metrics, intended use."""
        return {key: value for key, value in self.sidecar.as_json().items() if key != "sha256"}

    @property
    def review_threshold(self) -> float:
        """The calibrated score above which a person should look (a deployment may override it in Settings)."""
        return self.sidecar.calibration.review_threshold

    def coverage_threshold(self, coverage: float) -> tuple[float, float]:
        """(threshold, calibrated coverage) for a requested coverage; ValueError if not calibrated."""
        if not self.coverage_thresholds:
            raise ValueError("this model has no coverage calibration: run `lesionseg calibrate-coverage`")
        return threshold_for_coverage(self.coverage_thresholds, coverage)

    def model_input(self, rgb: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 -> the normalised 1×3×S×S batch the backend takes."""
        return preprocess.model_input(rgb, self.input_size, self.config.mean, self.config.std)

    def sample(
        self, batch: np.ndarray, samples: int, seed: int, tta: bool = DEFAULT_TTA
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One model input (1×3×S×S) -> its MC logits, 1×T×S×S (1×3T×S×S with `tta`), and the image's
        descriptor for the gate. What serving, calibration and evaluation all sample through, so that what is
        calibrated is what is served."""
        trunk, descriptor = self.views_trunk(batch, samples, tta)
        with self.batcher.inference_lock:
            logits = sample_tail(self.backend, self.config, trunk, samples, seed)
        return (pooled_views(logits) if tta else logits), descriptor

    def views_trunk(self, batch: np.ndarray, samples: int, tta: bool) -> tuple[list, np.ndarray | None]:
        """The trunk of the image's views (with `tta`, flipped both ways too), run with other requests' where
        they wait, and the image's descriptor for the gate."""
        check_samples(samples)
        trunk, descriptor = self.batcher.trunk(flipped_views(batch) if tta else batch)
        # The first view is the image as given; flipped views describe the same picture.
        return trunk, (None if descriptor is None else descriptor[0])

    def sample_maps(
        self, batch: np.ndarray, samples: int, seed: int, tta: bool = DEFAULT_TTA
    ) -> tuple[UncertaintyMaps, np.ndarray | None]:
        """`sample`'s logits summarised: the mean probability, its standard deviation and entropy. A backend
        on a GPU summarises where its logits are (`sample_maps`), the same maps to float rounding."""
        if not getattr(self.backend, "on_gpu", False):
            logits, descriptor = self.sample(batch, samples, seed, tta)
            return summarise(logits, self.temperature), descriptor
        trunk, descriptor = self.views_trunk(batch, samples, tta)
        views = 3 if tta else 1
        with self.batcher.inference_lock:
            masks = draw_channel_masks(self.config, views * samples, seed)
            maps = self.backend.sample_maps(trunk, masks, views, self.temperature)
        return maps, descriptor

    def predict(
        self,
        rgb: np.ndarray,
        samples: int = DEFAULT_SAMPLES,
        seed: int | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        output_size: tuple[int, int] | None = None,
        coverage: float | None = None,
        tta: bool = DEFAULT_TTA,
    ) -> Prediction:
        """`rgb` is H×W×3 uint8; `output_size` (width, height) defaults to the array's own size.
        `coverage` replaces `threshold` by the conformal threshold calibrated for that coverage. `tta`
        also samples the image flipped left-right and upside down (3× the inference), and pools the
        samples of all three views."""
        if coverage is not None:
            threshold, coverage = self.coverage_threshold(coverage)
        seed = secrets.randbelow(2**31) if seed is None else seed
        width, height = output_size or (rgb.shape[1], rgb.shape[0])
        started = time.perf_counter()
        batch = self.model_input(rgb)
        prepared = time.perf_counter()
        maps, image_descriptor = self.sample_maps(batch, samples, seed, tta)
        ood_score = float(self.gate.scores(image_descriptor[None])[0]) if self.gate is not None else None
        sampled = time.perf_counter()
        model_probability = maps.mean_probability[0]
        return Prediction(
            model_maps=maps,
            width=width,
            height=height,
            samples=samples,
            seed=seed,
            threshold=threshold,
            # At the model's resolution: the score is a ratio of areas, and this keeps it cheap.
            uncertainty_score=expected_dice_error(model_probability, model_probability >= threshold),
            ood_score=ood_score,
            coverage=coverage,
            descriptor=image_descriptor,
            timings_ms={
                "preprocess": round((prepared - started) * 1000, 2),
                "inference": round((sampled - prepared) * 1000, 2),
            },
        )
