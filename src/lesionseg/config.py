"""Settings, read from the environment (LESIONSEG_*) or passed in; limits and defaults live here."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lesionseg.defaults import DEFAULT_SAMPLES, DEFAULT_THRESHOLD, DEFAULT_TTA
from lesionseg.devices import DEVICE_PATTERN

PACKAGE_DIRECTORY = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = PACKAGE_DIRECTORY / "weights" / "default.safetensors"
# What an API key may do, least first: read cases; also add and review them; also delete them.
ROLES = ("reader", "reviewer", "admin")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LESIONSEG_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    weights: Path = DEFAULT_WEIGHTS
    # A clinic's own thresholds for these weights (`lesionseg calibrate-site`): gate, review, coverage.
    site_profile: Path | None = None

    max_upload_bytes: int = Field(30 * 1024 * 1024, gt=0)
    # A JSON body (a review with its corrected mask) is parsed whole: 4 MB holds a million runs.
    max_json_bytes: int = Field(4 * 1024 * 1024, gt=0)
    # 64 MP admits every dermatoscope and phone photo we know of; the header is checked first.
    max_pixels: int = Field(64_000_000, gt=0)
    min_side: int = Field(16, ge=1)

    default_samples: int = Field(DEFAULT_SAMPLES, ge=1, le=64)
    default_threshold: float = Field(DEFAULT_THRESHOLD, gt=0.0, lt=1.0)
    # Flip test-time augmentation unless a request says otherwise: more accurate, three trunk runs per image.
    default_tta: bool = DEFAULT_TTA
    # The heatmap's colour scale: this standard deviation (and above) is the hottest colour. On the
    # validation split 99.9 % of pixels have std below 0.038 (10 samples), so 0.05 uses the whole scale.
    heatmap_scale_max: float = Field(0.05, gt=0.0, le=0.5)
    heatmap_scale: Literal["absolute", "per_image"] = "absolute"

    # uncertainty_score at or above this recommends a human look; unset uses the checkpoint's
    # calibrated value (chosen on the validation split), else 0.2.
    review_threshold: float | None = Field(None, ge=0.0, le=1.0)
    # Answer 422 instead of a mask when an image does not look like dermoscopy (out_of_distribution).
    refuse_out_of_distribution: bool = False

    # pytorch (eager), onnx (ONNX Runtime on the graphs `lesionseg export-onnx` wrote beside the weights), or
    # auto: ONNX Runtime on the checkpoint's float32 graphs where they were exported, else PyTorch.
    # openvino: OpenVINO on the same graphs (`pip install 'lesionseg[openvino]'`), in its CPU's fastest
    # precision (bfloat16 where the CPU has it); openvino-f32: OpenVINO in float32. onnx-int8 and
    # openvino-int8: the static int8 trunk `lesionseg quantise` wrote beside the graphs, the tail in float.
    backend: Literal["auto", "pytorch", "onnx", "onnx-int8", "openvino", "openvino-f32", "openvino-int8"] = "auto"
    # Where the PyTorch backend runs (lesionseg.devices): auto takes CUDA where a GPU is visible, in bfloat16;
    # cpu, cuda and cuda:N by name. ONNX Runtime and OpenVINO run on the CPU.
    device: str = Field("auto", pattern=f"^(?:{DEVICE_PATTERN.pattern})$")
    # On a GPU, the PyTorch backend's trunk and summary replayed as CUDA graphs (backends/cuda_graphs.py): a
    # request at batch 1 spends its time launching kernels. Off until a GPU run measures that it pays
    # (benchmarks/gpu.py); ignored on the CPU.
    cuda_graphs: bool = False
    # Threads for one inference; 0 keeps the backend's default (one per core). With several
    # workers, give each cores / workers so they do not fight over the same cores.
    inference_threads: int = Field(0, ge=0)
    # Concurrent requests whose trunks run as one batch (see backends/batching.py); 1 turns batching off.
    max_batch_size: int = Field(4, ge=1, le=32)

    # Requests admitted to inference at once (running + waiting); more get 503 and Retry-After.
    max_queue: int = Field(16, ge=1)
    # Images in one POST /predict/batch; the whole body still counts against max_upload_bytes.
    max_batch_files: int = Field(16, ge=1)
    request_timeout_seconds: float = Field(120.0, gt=0)
    # Working memory for requests' images at once (see api/memory_budget.py): a 64-megapixel `overlay`
    # request takes about 0.7 GB, so this admits two such with room for small ones beside them.
    memory_budget_mb: int = Field(2048, ge=256)
    # Before a request exists: its headers' total size, their number, and the time they may take to
    # arrive from the first byte (see api/http_protocol.py). The body has request_timeout_seconds.
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    max_header_count: int = Field(100, ge=10)
    header_timeout_seconds: float = Field(10.0, gt=0)

    # API keys: comma-separated here and/or one per line in a file. None set = no auth. `reviewer:KEY`
    # gives a key its role (reader, reviewer or admin); a bare key is admin, as every key was before roles.
    api_keys: str = ""
    api_keys_file: Path | None = None

    # The review worklist (POST /cases and the rest) is on only with a database: an SQLAlchemy URL such as
    # sqlite:///cases.db (a file) or postgresql+psycopg://user@host/name. Unset, the service keeps nothing.
    database_url: str | None = None
    # Where the cases' images are kept, one file per distinct image, named by its sha256.
    storage_dir: Path = Path("lesionseg-images")
    # New cases are refused (507) rather than leave less than this much free on the storage folder's disk.
    storage_min_free_mb: int = Field(1024, ge=0)
    # Cases, and then their images, older than this many days are deleted (at start-up and as cases are
    # added); unset keeps them. At least a minute (a shorter one would expire a case as it is added), at
    # most a century (a longer one is not a date).
    retention_days: float | None = Field(None, ge=1 / 1440, le=36500)
    # The start-up sweep deletes an image that no case names only once its file is this old, so that a
    # worker starting beside others never touches an upload still on its way into a case.
    orphan_grace_seconds: float = Field(3600.0, ge=0)
    # Origins allowed to call the API from a browser page elsewhere, comma-separated; none by default.
    cors_origins: str = ""
    # Host names the service answers to, comma-separated ("*": any). Unset: loopback names only when bound
    # to loopback (the default host), any when bound to another address. Behind a proxy, list its names.
    allowed_hosts: str = ""
    # Pickle checkpoints (.pt/.pth) can run code when loaded; refused unless this is set.
    allow_pickle_checkpoints: bool = False
    log_level: str = "INFO"

    # `lesionseg dicomweb`'s credentials for the PACS: a user name and password (HTTP Basic), or a bearer token.
    # Settings only, never arguments, which `ps` and shell history show; secret, so a printed setting hides them.
    dicomweb_username: str = ""
    dicomweb_password: SecretStr = SecretStr("")
    dicomweb_token: SecretStr = SecretStr("")

    # Reviewer identifiers in the worklist are an HMAC of the key under this secret, so that nobody who reads
    # them can test guesses of a key. Unset: a random secret kept in the storage folder, which every worker
    # and restart shares.
    reviewer_id_secret: str = ""

    @model_validator(mode="after")
    def keys_are_well_formed(self) -> "Settings":
        self.api_key_roles  # noqa: B018 -- parsed now, so a mistyped role stops the start, not a request
        return self

    @property
    def api_key_roles(self) -> dict[str, str]:
        """Each key and its role. `role:KEY` with a role of ROLES, or a bare KEY (admin). Anything else, and a
        key given twice, is refused: a mistyped role must never make an admin key."""
        entries = [entry.strip() for entry in self.api_keys.split(",")]
        if self.api_keys_file is not None:
            entries += [line.strip() for line in self.api_keys_file.read_text().splitlines()]
        roles: dict[str, str] = {}
        for entry in filter(None, entries):
            role, separator, key = entry.partition(":")
            if not separator:
                role, key = "admin", entry
            elif not key:
                raise ValueError(f"API key entry '{role}:' has no key after its role")
            elif role not in ROLES:
                raise ValueError(
                    f"API key entry '{role}:…': '{role}' is not a role (one of {', '.join(ROLES)}, in lower case); "
                    "write each key as role:KEY, or a bare KEY for an admin"
                )
            if key in roles:
                raise ValueError("an API key is listed twice; give each key once, with one role")
            roles[key] = role
        return roles

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
