"""POST /predict/ and GET /health."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lesionseg import __version__
from lesionseg.api.deps import get_predictor, get_settings
from lesionseg.api.errors import RequestRejected
from lesionseg.api.schemas import ErrorBody, Health
from lesionseg.config import Settings
from lesionseg.imaging.decode import decode_upload
from lesionseg.imaging.render import combined_panels, encode_png
from lesionseg.predictor import Predictor
from lesionseg.uncertainty.mc_dropout import MAX_SAMPLES, MIN_SAMPLES

router = APIRouter()

# Generic binary uploads (curl without a type, some HTTP clients) are sniffed like images.
ACCEPTED_NON_IMAGE_TYPES = {"application/octet-stream", ""}
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (400, 413, 415, 422)}


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    return Health(status="ok", model=request.app.state.predictor.config.name, version=__version__)


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """Reads at most `limit` bytes; one byte more means the upload is too large."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise RequestRejected(413, f"the file is larger than the limit of {limit} bytes")
    return data


def check_content_type(upload: UploadFile) -> None:
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if not content_type.startswith("image/") and content_type not in ACCEPTED_NON_IMAGE_TYPES:
        raise RequestRejected(415, f"content type {content_type!r} is not an image; send image/jpeg, image/png, ...")


def predict_png(
    data: bytes,
    predictor: Predictor,
    settings: Settings,
    samples: int,
    threshold: float,
    seed: int | None,
    heatmap: str,
) -> tuple[bytes, int]:
    """Blocking work (decode, inference, render): runs in a worker thread, off the event loop."""
    decoded = decode_upload(data, settings.max_pixels, settings.min_side, draft_size=2 * predictor.input_size)
    prediction = predictor.predict(
        decoded.rgb,
        samples=samples,
        seed=seed,
        threshold=threshold,
        output_size=(decoded.original_width, decoded.original_height),
    )
    picture = combined_panels(prediction.mask, prediction.uncertainty_std, heatmap, settings.heatmap_scale_max)
    return encode_png(picture), prediction.seed


@router.post(
    "/predict/",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "mask (left) and uncertainty heatmap (right)"},
        **ERROR_RESPONSES,
    },
)
async def predict(
    file: Annotated[UploadFile | None, File(description="the dermoscopic image (JPEG, PNG, TIFF, ...)")] = None,
    samples: Annotated[int | None, Query(ge=MIN_SAMPLES, le=MAX_SAMPLES, description="MC-dropout passes")] = None,
    threshold: Annotated[float | None, Query(gt=0.0, lt=1.0, description="mask = mean probability ≥ threshold")] = None,
    seed: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="fixes the dropout masks")] = None,
    heatmap: Annotated[Literal["absolute", "per_image"] | None, Query(description="heatmap colour scale")] = None,
    predictor: Predictor = Depends(get_predictor),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Segments the lesion; returns one PNG, binary mask left and uncertainty heatmap right, each
    at the uploaded image's size."""
    if file is None:
        raise RequestRejected(400, "no file: send the image as multipart/form-data field 'file'")
    check_content_type(file)
    data = await read_limited(file, settings.max_upload_bytes)
    png, used_seed = await run_in_threadpool(
        predict_png,
        data,
        predictor,
        settings,
        samples or settings.default_samples,
        threshold or settings.default_threshold,
        seed,
        heatmap or settings.heatmap_scale,
    )
    return Response(content=png, media_type="image/png", headers={"X-Lesionseg-Seed": str(used_seed)})
