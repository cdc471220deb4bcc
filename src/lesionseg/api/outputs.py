"""From a prediction to the bytes of each response format. Pure: arrays in, bytes out."""

import base64
import json
from typing import Literal

from lesionseg.config import Settings
from lesionseg.imaging.decode import DecodedImage
from lesionseg.imaging.render import (
    PANELS_PALETTE,
    HeatmapScale,
    combined_panels,
    encode_mask_png,
    encode_png,
    outline_overlay,
    uncertainty_heatmap,
    uncertainty_to_uint16,
)
from lesionseg.predictor import Prediction
from lesionseg.segmenter import Result

OutputFormat = Literal["png", "mask", "uncertainty", "overlay", "json"]
MEDIA_TYPES = {"png": "image/png", "mask": "image/png", "uncertainty": "image/png", "overlay": "image/png"}


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def summary(result: Result, settings: Settings, include_images: bool) -> dict:
    body = result.to_json()
    prediction, decoded = result.prediction, result.decoded
    if include_images:
        body["images"] = {
            "overlay": data_url(render_image("overlay", prediction, decoded, settings)),
            "mask": data_url(render_image("mask", prediction, decoded, settings)),
            "heatmap": data_url(
                encode_png(
                    uncertainty_heatmap(prediction.bands("uncertainty_std"), "absolute", settings.heatmap_scale_max)
                )
            ),
        }
    return body


def render_image(
    format: OutputFormat,
    prediction: Prediction,
    decoded: DecodedImage,
    settings: Settings,
    heatmap: HeatmapScale | None = None,
) -> bytes:
    """Image formats; `heatmap` overrides the settings' colour scale for the two-panel PNG. The uncertainty
    map is drawn a band at a time (`Prediction.bands`), never held whole at the image's size."""
    uncertainty = prediction.bands("uncertainty_std")
    if format == "png":
        scale = heatmap or settings.heatmap_scale
        return encode_png(
            combined_panels(prediction.mask, uncertainty, scale, settings.heatmap_scale_max),
            palette=PANELS_PALETTE,
        )
    if format == "mask":
        return encode_mask_png(prediction.mask)
    if format == "uncertainty":
        return encode_png(uncertainty_to_uint16(uncertainty))
    if format == "overlay":
        return encode_png(outline_overlay(decoded.rgb, prediction.mask, uncertainty, settings.heatmap_scale_max))
    raise ValueError(f"unknown format {format!r}")


def json_bytes(body: dict) -> bytes:
    return json.dumps(body).encode()
