"""POST /predict/ and /predict/batch: an upload's checks, the work in a worker thread, the response."""

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response

from lesionseg.api.deps import PredictionRequestDependency, SegmenterDependency, SettingsDependency
from lesionseg.api.errors import RequestRejected
from lesionseg.api.memory_budget import MemoryBudget, estimate_bytes
from lesionseg.api.schemas import BatchResult, ErrorBody, PredictionSummary
from lesionseg.config import Settings
from lesionseg.imaging.containers import is_dicom
from lesionseg.imaging.decode import ImageRejected
from lesionseg.imaging.render import HeatmapScale
from lesionseg.segmenter import (
    DICOM_FORMATS,
    MEDIA_TYPES,
    NOT_DICOM_SOURCE,
    OutputFormat,
    PredictionRequest,
    Result,
    Segmenter,
)

router = APIRouter(tags=["predict"])

# Generic binary uploads (curl without a type, some HTTP clients) are sniffed like images; DICOM files have a
# type of their own.
ACCEPTED_NON_IMAGE_TYPES = {"application/octet-stream", "", "application/dicom"}
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (400, 413, 415, 422)}
PREDICT_RESPONSES = {
    200: {
        "description": "png: mask left, uncertainty heatmap right; mask: 8-bit 0/255; uncertainty: 16-bit "
        "round(std / 0.5 × 65535); overlay: photo with outline and uncertainty; json: a summary; for a DICOM "
        "upload, dicom-seg: a DICOM Segmentation, dicom-pmap: the uncertainty as a DICOM Parametric Map",
        "model": PredictionSummary,
        "content": {"image/png": {}, "application/dicom": {}},
    },
    **ERROR_RESPONSES,
}


@dataclass(frozen=True)
class ResponseFormat:
    """What a response holds: the output format and, for some, how it is drawn."""

    format: OutputFormat = "json"
    heatmap: HeatmapScale | None = None  # png: the colour scale, instead of the settings'
    include_images: bool = False  # json: also the overlay, mask and heatmap PNGs

    @property
    def shows_photo(self) -> bool:
        """Large JPEGs decode at reduced scale unless the output shows the photo itself."""
        return self.format == "overlay" or (self.format == "json" and self.include_images)

    @property
    def memory_profile(self) -> str:
        return "json_with_images" if self.format == "json" and self.include_images else self.format


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """Reads at most `limit` bytes; one byte more means the upload is too large."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise RequestRejected(413, f"the file is larger than the limit of {limit} bytes")
    return data


def name_some(names: list[str], most: int = 5, longest: int = 40) -> str:
    """A few names, each shortened: an error message never echoes back a whole hostile request."""
    shown = ", ".join(repr(name[:longest] + ("…" if len(name) > longest else "")) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


async def check_form_fields(request: Request) -> None:
    """One image per request, in the field `file`; anything else is a mistake worth naming."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if content_type:
            raise RequestRejected(415, f"send multipart/form-data with the image in field 'file', not {content_type!r}")
        return
    form = await request.form()  # already parsed by FastAPI; Starlette caches it
    files = form.getlist("file")
    if len(files) > 1:
        raise RequestRejected(400, f"{len(files)} files in field 'file': send one image per request")
    unknown = sorted(set(form.keys()) - {"file"})
    if unknown:
        raise RequestRejected(400, f"unexpected form field(s) {name_some(unknown)}: send the image as field 'file'")


def check_content_type(upload: UploadFile) -> None:
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if not content_type.startswith("image/") and content_type not in ACCEPTED_NON_IMAGE_TYPES:
        raise RequestRejected(415, f"content type {content_type!r} is not an image; send image/jpeg, image/png, ...")


async def read_single_upload(request: Request, file: UploadFile | None, settings: Settings) -> bytes:
    """The checks of every one-image route before any work: one file, in field `file`, of an image type,
    within the size limit. Returns the file's bytes."""
    await check_form_fields(request)
    if file is None:
        raise RequestRejected(400, "no file: send the image as multipart/form-data field 'file'")
    check_content_type(file)
    return await read_limited(file, settings.max_upload_bytes)


def segment_upload(data: bytes, segmenter: Segmenter, request: PredictionRequest, full_pixels: bool = False) -> Result:
    result = segmenter.predict(data, request, full_pixels)
    if result.out_of_distribution and segmenter.settings.refuse_out_of_distribution:
        raise ImageRejected(
            422,
            f"this image does not look like dermoscopy (ood_score {result.ood_score:.2f}, flagged from 1.0), "
            "so no mask is given; send a dermoscopic image of a skin lesion",
        )
    return result


def trust_headers(result: Result) -> dict[str, str]:
    """What the JSON says about trusting the result, for the image formats, which have no room for it."""
    unknown = result.out_of_distribution is None
    return {
        "X-Lesionseg-Seed": str(result.prediction.seed),
        "X-Lesionseg-Threshold": f"{result.prediction.threshold:g}",
        "X-Lesionseg-Out-Of-Distribution": "unavailable" if unknown else str(result.out_of_distribution).lower(),
        "X-Lesionseg-Ood-Score": "unavailable" if unknown else f"{result.ood_score:.4f}",
        "X-Lesionseg-Review-Recommended": str(result.review_recommended).lower(),
    }


def render_upload(
    data: bytes, segmenter: Segmenter, request: PredictionRequest, response: ResponseFormat
) -> tuple[bytes, str, dict[str, str]]:
    result = segment_upload(data, segmenter, request, response.shows_photo)
    content = result.render(response.format, response.heatmap, response.include_images)
    return content, MEDIA_TYPES[response.format], trust_headers(result)


def predict_and_render(
    data: bytes, segmenter: Segmenter, request: PredictionRequest, response: ResponseFormat, budget: MemoryBudget
) -> tuple[bytes, str, dict[str, str]]:
    """Blocking work (decode, inference, render): runs in a worker thread, off the event loop, once the
    memory its image needs is reserved."""
    estimate = estimate_bytes(data, response.memory_profile)
    return budget.run(estimate, partial(render_upload, data, segmenter, request, response))


@router.post("/predict/", response_class=Response, responses=PREDICT_RESPONSES)
async def predict(
    prediction_request: PredictionRequestDependency,
    segmenter: SegmenterDependency,
    settings: SettingsDependency,
    request: Request,
    file: Annotated[UploadFile | None, File(description="the dermoscopic image (JPEG, PNG, TIFF, DICOM, ...)")] = None,
    format: Annotated[OutputFormat, Query(description="what to return")] = "png",
    heatmap: Annotated[Literal["absolute", "per_image"] | None, Query(description="heatmap colour scale")] = None,
    include_images: Annotated[bool, Query(description="json only: add overlay, mask, heatmap PNGs")] = False,
) -> Response:
    """Segments the lesion at the uploaded image's own size, with MC-dropout uncertainty."""
    data = await read_single_upload(request, file, settings)
    if format in DICOM_FORMATS and not is_dicom(data):
        # Refused before any work: the answer would need a patient and study that only a DICOM upload has.
        raise RequestRejected(422, NOT_DICOM_SOURCE.format(format=format, source="non-DICOM"))
    response = ResponseFormat(format, heatmap, include_images)
    state = request.app.state
    work = partial(
        predict_and_render,
        data,
        segmenter=segmenter,
        request=prediction_request,
        response=response,
        budget=state.memory_budget,
    )
    with state.inference_gate.admit() as admission, state.metrics.inference.time():
        content, media_type, headers = await admission.run(state.inference_executor, work)
    state.metrics.samples.observe(prediction_request.samples)
    return Response(content=content, media_type=media_type, headers=headers)


def summarise_upload(data: bytes, segmenter: Segmenter, request: PredictionRequest, budget: MemoryBudget) -> dict:
    return budget.run(estimate_bytes(data, "json"), lambda: segment_upload(data, segmenter, request).to_json())


@router.post("/predict/batch", response_model=BatchResult, responses=ERROR_RESPONSES)
async def predict_batch(
    prediction_request: PredictionRequestDependency,
    segmenter: SegmenterDependency,
    settings: SettingsDependency,
    request: Request,
    files: Annotated[list[UploadFile] | None, File(description="several images, one part each")] = None,
) -> BatchResult:
    """The JSON summary of several images in one request, in order. One bad image gets its own
    4xx entry and does not fail the others. The whole request counts against the upload limit."""
    if not files:
        raise RequestRejected(400, "no files: send the images as multipart/form-data fields named 'files'")
    if len(files) > settings.max_batch_files:
        raise RequestRejected(413, f"{len(files)} files; a batch holds at most {settings.max_batch_files}")
    state = request.app.state
    results = []
    with state.inference_gate.admit() as admission:
        for upload in files:
            try:
                check_content_type(upload)
                data = await read_limited(upload, settings.max_upload_bytes)
                work = partial(
                    summarise_upload, data, segmenter=segmenter, request=prediction_request, budget=state.memory_budget
                )
                body = await admission.run(state.inference_executor, work)
                results.append({"filename": upload.filename, "status": 200, "result": body})
            except RequestRejected as error:
                results.append({"filename": upload.filename, "status": error.status_code, "detail": error.detail})
            except ImageRejected as error:
                results.append({"filename": upload.filename, "status": error.status_code, "detail": error.message})
    state.metrics.samples.observe(prediction_request.samples)
    return BatchResult(results=results)
