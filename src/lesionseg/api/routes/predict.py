"""POST /predict/ and /predict/batch: an upload's checks, the work in a worker thread, the response."""

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response

from lesionseg.api.deps import get_predictor, get_settings
from lesionseg.api.errors import RequestRejected
from lesionseg.api.memory_budget import MemoryBudget, estimate_bytes
from lesionseg.api.outputs import MEDIA_TYPES, OutputFormat, json_bytes, render_image, summary
from lesionseg.api.schemas import BatchResult, ErrorBody, PredictionSummary
from lesionseg.config import Settings
from lesionseg.imaging.decode import ImageRejected
from lesionseg.predictor import Predictor
from lesionseg.segmenter import Result, Segmenter
from lesionseg.uncertainty.coverage import MAX_COVERAGE, MIN_COVERAGE
from lesionseg.uncertainty.sampling import MAX_SAMPLES, MIN_SAMPLES

router = APIRouter(tags=["predict"])

SamplesQuery = Annotated[int | None, Query(ge=MIN_SAMPLES, le=MAX_SAMPLES, description="MC-dropout passes")]
ThresholdQuery = Annotated[float | None, Query(gt=0.0, lt=1.0, description="mask = mean probability ≥ threshold")]
SeedQuery = Annotated[int | None, Query(ge=0, le=2**31 - 1, description="fixes the dropout masks")]
CoverageQuery = Annotated[
    float | None,
    Query(
        ge=MIN_COVERAGE,
        le=MAX_COVERAGE,
        description="instead of threshold: the mask keeps at least this expected fraction of lesion pixels "
        "(conformal risk control, calibrated on held-out dermoscopy)",
    ),
]
FlipQuery = Annotated[
    bool, Query(description="also sample the image flipped both ways and pool the samples (3× the inference)")
]

# Generic binary uploads (curl without a type, some HTTP clients) are sniffed like images.
ACCEPTED_NON_IMAGE_TYPES = {"application/octet-stream", ""}
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (400, 413, 415, 422)}
PREDICT_RESPONSES = {
    200: {
        "description": "png: mask left, uncertainty heatmap right; mask: 8-bit 0/255; uncertainty: 16-bit "
        "round(std / 0.5 × 65535); overlay: photo with outline and uncertainty; json: a summary",
        "model": PredictionSummary,
        "content": {"image/png": {}},
    },
    **ERROR_RESPONSES,
}


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


def check_coverage(threshold: float | None, coverage: float | None, predictor: Predictor) -> None:
    if coverage is None:
        return
    if threshold is not None:
        raise RequestRejected(422, "give either threshold or coverage: coverage chooses the threshold itself")
    if not predictor.coverage_thresholds:
        raise RequestRejected(422, "this model has no coverage calibration, so coverage cannot be guaranteed")


def check_content_type(upload: UploadFile) -> None:
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if not content_type.startswith("image/") and content_type not in ACCEPTED_NON_IMAGE_TYPES:
        raise RequestRejected(415, f"content type {content_type!r} is not an image; send image/jpeg, image/png, ...")


async def read_single_upload(
    request: Request,
    file: UploadFile | None,
    settings: Settings,
    predictor: Predictor,
    threshold: float | None,
    coverage: float | None,
) -> bytes:
    """The checks of every one-image route before any work: one file, in field `file`, of an image type,
    within the size limit, and a threshold and coverage that go together. Returns the file's bytes."""
    await check_form_fields(request)
    if file is None:
        raise RequestRejected(400, "no file: send the image as multipart/form-data field 'file'")
    check_content_type(file)
    data = await read_limited(file, settings.max_upload_bytes)
    check_coverage(threshold, coverage, predictor)
    return data


@dataclass(frozen=True)
class PredictOptions:
    format: OutputFormat
    samples: int
    threshold: float
    seed: int | None
    heatmap: str | None = None
    include_images: bool = False
    coverage: float | None = None
    tta: bool = False

    @classmethod
    def with_defaults(
        cls,
        settings: Settings,
        format: OutputFormat,
        samples: int | None,
        threshold: float | None,
        seed: int | None,
        **rest,
    ) -> "PredictOptions":
        """A request's options, with the settings' defaults where the client gave none."""
        return cls(format, samples or settings.default_samples, threshold or settings.default_threshold, seed, **rest)


def segment_upload(data: bytes, predictor: Predictor, settings: Settings, options: PredictOptions) -> Result:
    # Large JPEGs decode at reduced scale unless an output shows the photo itself.
    full_pixels = options.format == "overlay" or (options.format == "json" and options.include_images)
    result = Segmenter(predictor, settings).predict(
        data, options.samples, options.seed, options.threshold, options.coverage, options.tta, full_pixels
    )
    if result.out_of_distribution and settings.refuse_out_of_distribution:
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


def predict_and_render(
    data: bytes, predictor: Predictor, settings: Settings, options: PredictOptions, budget: MemoryBudget
) -> tuple[bytes, str, dict[str, str]]:
    """Blocking work (decode, inference, render): runs in a worker thread, off the event loop, once the
    memory its image needs is reserved."""
    output = "json_with_images" if options.format == "json" and options.include_images else options.format
    with budget.reserve(estimate_bytes(data, output)):
        result = segment_upload(data, predictor, settings, options)
        headers = trust_headers(result)
        if options.format == "json":
            return json_bytes(summary(result, settings, options.include_images)), "application/json", headers
        content = render_image(options.format, result.prediction, result.decoded, settings, options.heatmap)
        return content, MEDIA_TYPES[options.format], headers


@router.post("/predict/", response_class=Response, responses=PREDICT_RESPONSES)
async def predict(
    file: Annotated[UploadFile | None, File(description="the dermoscopic image (JPEG, PNG, TIFF, ...)")] = None,
    format: Annotated[OutputFormat, Query(description="what to return")] = "png",
    samples: SamplesQuery = None,
    threshold: ThresholdQuery = None,
    seed: SeedQuery = None,
    heatmap: Annotated[Literal["absolute", "per_image"] | None, Query(description="heatmap colour scale")] = None,
    include_images: Annotated[bool, Query(description="json only: add overlay, mask, heatmap PNGs")] = False,
    tta: FlipQuery = False,
    coverage: CoverageQuery = None,
    *,
    request: Request,
    predictor: Predictor = Depends(get_predictor),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Segments the lesion at the uploaded image's own size, with MC-dropout uncertainty."""
    data = await read_single_upload(request, file, settings, predictor, threshold, coverage)
    options = PredictOptions.with_defaults(
        settings,
        format,
        samples,
        threshold,
        seed,
        heatmap=heatmap,
        include_images=include_images,
        coverage=coverage,
        tta=tta,
    )
    metrics = request.app.state.metrics
    with request.app.state.inference_gate.admit() as admission, metrics.inference.time():
        content, media_type, headers = await admission.run(
            request.app.state.inference_executor,
            predict_and_render,
            data,
            predictor,
            settings,
            options,
            request.app.state.memory_budget,
        )
    metrics.samples.observe(options.samples)
    return Response(content=content, media_type=media_type, headers=headers)


def summarise_upload(
    data: bytes, predictor: Predictor, settings: Settings, options: PredictOptions, budget: MemoryBudget
) -> dict:
    with budget.reserve(estimate_bytes(data, "json")):
        return summary(segment_upload(data, predictor, settings, options), settings, include_images=False)


@router.post("/predict/batch", response_model=BatchResult, responses=ERROR_RESPONSES)
async def predict_batch(
    files: Annotated[list[UploadFile] | None, File(description="several images, one part each")] = None,
    samples: SamplesQuery = None,
    threshold: ThresholdQuery = None,
    seed: SeedQuery = None,
    coverage: CoverageQuery = None,
    tta: FlipQuery = False,
    *,
    request: Request,
    predictor: Predictor = Depends(get_predictor),
    settings: Settings = Depends(get_settings),
) -> BatchResult:
    """The JSON summary of several images in one request, in order. One bad image gets its own
    4xx entry and does not fail the others. The whole request counts against the upload limit."""
    if not files:
        raise RequestRejected(400, "no files: send the images as multipart/form-data fields named 'files'")
    if len(files) > settings.max_batch_files:
        raise RequestRejected(413, f"{len(files)} files; a batch holds at most {settings.max_batch_files}")
    check_coverage(threshold, coverage, predictor)
    options = PredictOptions.with_defaults(settings, "json", samples, threshold, seed, coverage=coverage, tta=tta)
    results = []
    with request.app.state.inference_gate.admit() as admission:
        for upload in files:
            try:
                check_content_type(upload)
                data = await read_limited(upload, settings.max_upload_bytes)
                body = await admission.run(
                    request.app.state.inference_executor,
                    summarise_upload,
                    data,
                    predictor,
                    settings,
                    options,
                    request.app.state.memory_budget,
                )
                results.append({"filename": upload.filename, "status": 200, "result": body})
            except RequestRejected as error:
                results.append({"filename": upload.filename, "status": error.status_code, "detail": error.detail})
            except ImageRejected as error:
                results.append({"filename": upload.filename, "status": error.status_code, "detail": error.message})
    request.app.state.metrics.samples.observe(options.samples)
    return BatchResult(results=results)
