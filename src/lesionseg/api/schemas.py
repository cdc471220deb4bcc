"""Typed response bodies, so the OpenAPI document says exactly what comes back."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Health(BaseModel):
    status: str
    model: str | None
    version: str


class ErrorBody(BaseModel):
    detail: str = Field(description="what is wrong, in words")
    errors: list[dict[str, Any]] | None = Field(None, description="for 422: each invalid parameter, machine-readable")


class ModelIdentity(BaseModel):
    name: str
    version: str
    sha256: str


# More runs than any mask a person paints (a brush-edited lesion at 8000 px has tens of thousands).
MAX_RUNS = 1_000_000
# Review versions are stored as 32-bit integers on every database.
MAX_VERSION = 2**31 - 1


class RunLengthMask(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: list[int] = Field(
        max_length=MAX_RUNS, description="COCO uncompressed RLE, column-major, starting with background"
    )

    @field_validator("counts")
    @classmethod
    def runs_have_length(cls, counts: list[int]) -> list[int]:
        # Only the first run (background) may be empty: a million empty runs describe nothing but cost.
        if any(count <= 0 for count in counts[1:]):
            raise ValueError("every run after the first must be at least one pixel long")
        return counts


class ProposalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    box: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="[x0, y0, x1, y1] around the lesion, in the image's pixels; without it, the box around the"
        " model's own mask",
    )


class ProposalBody(BaseModel):
    mask_rle: RunLengthMask = Field(description="the proposed mask, at the image's size")
    model: str = Field(description="the box-prompted model that proposed it")
    box: list[float] = Field(description="the box used, clipped to the image: [x0, y0, x1, y1]")
    predicted_iou: float = Field(description="the proposer's own estimate of the mask's overlap with the lesion")
    timings_ms: dict[str, float] = Field(
        description="image_embedding (0 when this image's was kept from an earlier box) and mask_decoder"
    )


class PredictionSummary(BaseModel):
    width: int
    height: int
    mask_rle: RunLengthMask
    lesion_area_pixels: int
    lesion_area_fraction: float
    bounding_box: list[int] | None = Field(description="COCO [x, y, width, height]; null when no lesion is found")
    outline: list[list[int]] = Field(description="outer outlines as COCO polygons [x1, y1, x2, y2, ...]")
    mean_probability_in_lesion: float | None
    mean_uncertainty_std_in_lesion: float | None
    uncertainty_score: float = Field(description="expected Dice error (1 − soft Dice of the mean probability)")
    review_recommended: bool = Field(description="uncertainty_score ≥ review_threshold, or out_of_distribution")
    review_threshold: float
    ood_score: float | None = Field(
        description="distance from the training images in the model's features, over the flagging distance; "
        "null when the model has no out-of-distribution gate"
    )
    out_of_distribution: bool | None = Field(description="ood_score ≥ 1: probably not dermoscopy; null: unknown")
    coverage: float | None = Field(
        description="the calibrated coverage that chose `threshold` (expected fraction of lesion pixels inside "
        "the mask); null when `threshold` was given or defaulted"
    )
    model: ModelIdentity
    samples: int
    seed: int
    threshold: float
    timings_ms: dict[str, float]
    images: dict[str, str] | None = Field(None, description="PNG data URLs, when include_images=true")


class BackendChoice(BaseModel):
    name: str = Field(description="the backend serving: pytorch, onnx, onnx-int8, openvino...")
    reason: str = Field(description="why: asked for by name, or what `auto` found installed")
    device: str = Field("cpu", description="where it runs: cpu, or cuda:N (the PyTorch backend on a GPU)")
    precision: str = Field("float32", description="float32 on a CPU; bfloat16 (or float16) on a GPU")


class ModelCard(BaseModel):
    name: str
    version: str
    sha256: str
    backend: BackendChoice | None = None
    card: dict[str, Any]


class ImageResult(BaseModel):
    filename: str | None
    status: int = Field(description="200, or the 4xx this image alone would have got")
    result: PredictionSummary | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    results: list[ImageResult]


class CaseImage(BaseModel):
    sha256: str
    bytes: int
    media_type: str
    width: int
    height: int
    filename: str | None = Field(description="the upload's file name, as the client sent it (no folders)")


class CaseSettings(BaseModel):
    samples: int
    seed: int
    threshold: float = Field(description="the threshold that made the mask (the coverage's, when one was asked)")
    coverage: float | None
    tta: bool


class CaseReview(BaseModel):
    status: Literal["pending", "accepted", "corrected", "rejected"]
    version: int = Field(description="send it back with a change; a change naming an older version gets 409")
    reviewer: str | None = Field(description="the identifier of the API key that last changed it")
    updated_at: str
    out_of_distribution_confirmed: bool = Field(
        False, description="the gate flagged the case, and the reviewer who accepted or corrected it confirmed it"
    )
    mask_rle: RunLengthMask | None = Field(None, description="the corrected mask, when status is corrected")


class DicomSource(BaseModel):
    """A DICOM upload's source picture, as its header names it; shown only to those who may read cases."""

    patient_id: str | None = Field(description="Patient ID (0010,0020)")
    accession_number: str | None = Field(description="Accession Number (0008,0050)")
    study_instance_uid: str | None = Field(description="Study Instance UID (0020,000D)")
    series_instance_uid: str | None = Field(description="Series Instance UID (0020,000E)")
    sop_instance_uid: str | None = Field(description="SOP Instance UID (0008,0018) of the picture")


class CaseSource(BaseModel):
    filename: str | None = Field(description="the upload's file name, without folders")
    external_id: str | None = Field(description="the identifier the uploader gave (`external_id` at POST /cases)")
    dicom: DicomSource | None = Field(None, description="a DICOM upload's patient, study, series and instance")


class CaseBody(BaseModel):
    id: str
    created_at: str
    image: CaseImage
    external_id: str | None = Field(description="the identifier the uploader gave (`external_id` at POST /cases)")
    source: CaseSource
    model: ModelIdentity
    settings: CaseSettings
    uncertainty_score: float
    review_recommended: bool
    out_of_distribution: bool | None
    ood_score: float | None
    mask_rle: RunLengthMask | None = Field(None, description="the model's mask (not in worklist pages)")
    review: CaseReview


class ReviewEventBody(BaseModel):
    version: int = Field(description="the review's version this verdict made")
    status: Literal["pending", "accepted", "corrected", "rejected"]
    reviewer: str | None = Field(description="the identifier of the API key that gave it; none for the upload")
    at: str
    mask_rle: RunLengthMask | None = Field(None, description="the corrected mask, when status is corrected")


class CaseHistory(BaseModel):
    case_id: str
    events: list[ReviewEventBody] = Field(description="every verdict the case has had, oldest first")


class Worklist(BaseModel):
    cases: list[CaseBody]
    counts: dict[str, int] = Field(description="how many cases have each status, over the whole worklist")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class ReviewChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["pending", "accepted", "corrected", "rejected"]
    mask_rle: RunLengthMask | None = Field(None, description="the corrected mask; required with status corrected")
    version: int = Field(ge=1, le=MAX_VERSION, description="the review's version this change was made on")
    confirm_out_of_distribution: bool = Field(
        False,
        description="accepting or correcting a case the gate flagged as not dermoscopy needs this: the reviewer "
        "confirms that it is dermoscopy, and so that it may be exported for training",
    )
