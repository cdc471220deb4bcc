"""Typed response bodies, so the OpenAPI document says exactly what comes back."""

from typing import Any

from pydantic import BaseModel, Field


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


class RunLengthMask(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: list[int] = Field(description="COCO uncompressed RLE, column-major, starting with background")


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


class ModelCard(BaseModel):
    name: str
    version: str
    sha256: str
    card: dict[str, Any]


class BatchItem(BaseModel):
    filename: str | None
    status: int = Field(description="200, or the 4xx this image alone would have got")
    result: PredictionSummary | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]
