"""A checkpoint's JSON sidecar: what the weights are, how they were made, their sha256; and where the files
it vouches for lie (the ONNX graphs, the int8 trunk), checked against it. No torch, no ONNX Runtime.

Read into `Sidecar`, a pydantic model: the entries the code acts on (the thresholds, the graphs' checksums) are
typed and checked once, when the weights are loaded, so a damaged sidecar is refused in one sentence naming the
entry rather than failing later on a missing key. What only describes the model (how it was trained, what it
measured) is kept as written, and written back unchanged."""

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lesionseg.files import write_atomically
from lesionseg.model.config import ModelConfig

SIDECAR_FORMAT_VERSION = 1
# The share of pixels above which a person should look, for sidecars calibrated before it was recorded.
DEFAULT_REVIEW_THRESHOLD = 0.2


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or does not fit its architecture."""


class Entry(BaseModel):
    """One part of the sidecar. Entries it does not name (a newer version's, or a record's detail) are kept."""

    # "model_version" is a sidecar entry, not pydantic's namespace.
    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())


class Calibration(Entry):
    temperature: float = 1.0
    review_threshold: float = DEFAULT_REVIEW_THRESHOLD
    review_target_fraction: float = 0.1


class Coverage(Entry):
    thresholds: dict[str, float] = {}


class GateRecord(Entry):
    """The out-of-distribution gate's lines; its statistics lie in the file named, beside the weights."""

    threshold: float
    classifier_threshold: float | None = None
    statistics: str
    statistics_sha256: str


class Graph(Entry):
    sha256: str


class OnnxExport(Entry):
    weights_sha256: str | None = None  # absent before 0.3.0
    trunk: Graph
    tail: Graph
    # Graphs exported by 0.5.0 and earlier want each image's trunk repeated once per sample.
    tail_takes_trunk_once: bool = False


class Int8Trunk(Entry):
    float_trunk_sha256: str
    trunk: Graph


class Sidecar(Entry):
    format_version: int = SIDECAR_FORMAT_VERSION
    lesionseg_version: str | None = None
    model_version: str | None = None
    architecture: dict[str, Any]
    weights_dtype: str = "float32"
    sha256: str
    training: dict[str, Any] = {}
    calibration: Calibration = Calibration()
    coverage: Coverage | None = None
    out_of_distribution: GateRecord | None = None
    onnx: OnnxExport | None = None
    onnx_int8: Int8Trunk | None = None

    @property
    def version(self) -> str:
        return self.model_version or self.lesionseg_version or "unknown"

    def entry(self, key: str) -> Any:
        """An entry that only describes the model (an evaluation, the training history), as written; None if absent."""
        value = getattr(self, key, None) if key in type(self).model_fields else (self.model_extra or {}).get(key)
        return value.model_dump(mode="json", exclude_unset=True) if isinstance(value, BaseModel) else value

    def as_json(self) -> dict[str, Any]:
        """Everything as written: what `/info` shows and what is written back."""
        return self.model_dump(mode="json", exclude_unset=True)

    def with_entries(self, **entries: Any) -> "Sidecar":
        """A copy with these entries replaced, checked as a read sidecar is."""
        return parse_sidecar({**self.as_json(), **entries}, "sidecar")


def parse_sidecar(values: Any, name: str) -> Sidecar:
    try:
        return Sidecar.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'the whole file'}: {problem['msg'].lower()}"
            for problem in error.errors()
        )
        raise CheckpointError(f"sidecar {name} is not one lesionseg can use ({problems})") from None


def sidecar_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(weights_path: Path) -> Sidecar:
    path = sidecar_path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"no sidecar {path.name} beside {Path(weights_path).name}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"sidecar {path.name} is not valid JSON: {error}") from error
    return parse_sidecar(values, path.name)


def update_sidecar(weights_path: Path, key: str, value: Any) -> None:
    """Sets one entry of the sidecar (calibration, evaluation, the ONNX export), keeping the rest. Written
    to a temporary file and renamed over the old one: a crash, or a server reading it, sees the old sidecar
    or the new one, never half of one."""
    path = sidecar_path(weights_path)
    sidecar = json.loads(path.read_text())
    sidecar[key] = value
    parse_sidecar(sidecar, path.name)  # never write one that the next load would refuse
    write_atomically(path, (json.dumps(sidecar, indent=2) + "\n").encode())


def config_from_sidecar(sidecar: Sidecar) -> ModelConfig:
    architecture = dict(sidecar.architecture)
    for key in ("out_indices", "mean", "std", "dropout_channels"):
        if key in architecture:
            architecture[key] = tuple(architecture[key])
    return ModelConfig(**architecture)


# The trunk graph's last output: the pooled image descriptor the out-of-distribution gate reads.
DESCRIPTOR_OUTPUT = "descriptor"


def onnx_paths(weights_path: Path) -> tuple[Path, Path]:
    """Where `lesionseg export-onnx` puts the two graphs: beside the checkpoint."""
    stem = Path(weights_path).with_suffix("")
    return stem.with_name(stem.name + ".trunk.onnx"), stem.with_name(stem.name + ".tail.onnx")


def checked_onnx_paths(weights_path: Path, sidecar: Sidecar) -> tuple[Path, Path]:
    """The two graphs, once they are known to be the ones the sidecar recorded, from these weights."""
    exported = sidecar.onnx
    if exported is None:
        raise CheckpointError(f"{Path(weights_path).name} has no ONNX export: run `lesionseg export-onnx` first")
    if exported.weights_sha256 != sidecar.sha256:
        raise CheckpointError(
            f"{Path(weights_path).name}: its ONNX graphs were exported from other weights (or before 0.3.0, "
            "which did not record them); run `lesionseg export-onnx` again"
        )
    paths = onnx_paths(weights_path)
    for path, graph in zip(paths, (exported.trunk, exported.tail), strict=True):
        if not path.is_file():
            raise CheckpointError(f"ONNX graph {path.name} is missing: run `lesionseg export-onnx`")
        if file_sha256(path) != graph.sha256:
            raise CheckpointError(f"{path.name}: sha256 does not match the sidecar; export again")
    return paths


def int8_trunk_path(weights_path: Path) -> Path:
    """Where `lesionseg quantise` puts the static int8 trunk: beside the float graphs."""
    stem = Path(weights_path).with_suffix("")
    return stem.with_name(stem.name + ".trunk.int8.onnx")


def checked_int8_trunk_path(weights_path: Path, sidecar: Sidecar) -> Path:
    """The int8 trunk, once it is known to be the one the sidecar recorded, quantised from the current float trunk."""
    quantised = sidecar.onnx_int8
    if quantised is None:
        raise CheckpointError(f"{Path(weights_path).name} has no int8 trunk: run `lesionseg quantise` first")
    if sidecar.onnx is None or quantised.float_trunk_sha256 != sidecar.onnx.trunk.sha256:
        raise CheckpointError(
            f"{Path(weights_path).name}: its int8 trunk was quantised from another export; run `lesionseg quantise`"
        )
    path = int8_trunk_path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"int8 graph {path.name} is missing: run `lesionseg quantise`")
    if file_sha256(path) != quantised.trunk.sha256:
        raise CheckpointError(f"{path.name}: sha256 does not match the sidecar; quantise again")
    return path


def graph_paths(weights_path: Path, sidecar: Sidecar, int8_trunk: bool) -> tuple[Path, Path]:
    """(trunk, tail) to run: the float graphs, or the int8 trunk with the float tail."""
    trunk_path, tail_path = checked_onnx_paths(weights_path, sidecar)
    if int8_trunk:
        trunk_path = checked_int8_trunk_path(weights_path, sidecar)
    return trunk_path, tail_path


def has_descriptor(last_output: str, weights_path: Path, sidecar: Sidecar) -> bool:
    """Whether the trunk graph gives the image descriptor; graphs exported before the out-of-distribution
    gate do not, and a sidecar that has a gate refuses them."""
    found = last_output == DESCRIPTOR_OUTPUT
    if sidecar.out_of_distribution is not None and not found:
        raise CheckpointError(
            f"{Path(weights_path).name}: the ONNX trunk predates the out-of-distribution gate; export again"
        )
    return found


def tail_repeats_trunk(sidecar: Sidecar) -> bool:
    """Whether the exported tail graph wants each image's trunk repeated once per sample, as graphs exported
    by lesionseg 0.5.0 and earlier did; the backends repeat it for them, so that old exports still serve."""
    return sidecar.onnx is not None and not sidecar.onnx.tail_takes_trunk_once
