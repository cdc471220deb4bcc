"""The review worklist over HTTP: POST /cases predicts and keeps a case; GET /cases lists what waits
for a person; PUT /cases/{id}/review records their verdict; DELETE /cases/{id} forgets it.

On only when the service has a database (LESIONSEG_DATABASE_URL); otherwise every route answers 404
saying so. Readers may look, reviewers may also add and review, admins may also delete. An unknown case,
a stale review or a bad mask raise `reviews.errors.CaseError`, which the service's error handlers answer.
"""

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, File, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from lesionseg.api.deps import (
    AdminDependency,
    CaseStoreDependency,
    PredictionRequestDependency,
    ReaderDependency,
    ReviewerDependency,
    SegmenterDependency,
    SettingsDependency,
)
from lesionseg.api.errors import RequestRejected
from lesionseg.api.memory_budget import PROPOSAL_ENCODER_BYTES, MemoryBudget, estimate_bytes
from lesionseg.api.routes.predict import read_single_upload, segment_upload
from lesionseg.api.schemas import (
    CaseBody,
    CaseHistory,
    ErrorBody,
    ProposalBody,
    ProposalRequest,
    ReviewChange,
    Worklist,
)
from lesionseg.config import Settings
from lesionseg.imaging.containers import image_length
from lesionseg.imaging.decode import decode_upload
from lesionseg.imaging.regions import rle_encode
from lesionseg.imaging.render import encode_mask_png, encode_png_bands
from lesionseg.model.sidecar import CheckpointError
from lesionseg.proposals.litemedsam import InvalidBox, box_around
from lesionseg.segmenter import PredictionRequest, Segmenter

router = APIRouter(tags=["cases"])

CaseId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="the case's id, as POST /cases gave it")]
MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff"}
MEDIA_TYPES |= {"BMP": "image/bmp", "WEBP": "image/webp", "GIF": "image/gif", "DICOM": "application/dicom"}
RESPONSES = {status: {"model": ErrorBody} for status in (401, 403, 404, 422)}


def store_upload(
    data: bytes, segmenter: Segmenter, request: PredictionRequest, store, provenance: dict[str, str | None]
) -> dict:
    result = segment_upload(data, segmenter, request)
    media_type = MEDIA_TYPES.get(result.decoded.format, "application/octet-stream")
    # What follows the picture's own end (a JPEG's EOI, a PNG's IEND) is no part of it, and is not kept.
    return store.add(data[: image_length(data)], media_type, result, request, **provenance)


def segment_and_store(
    data: bytes,
    segmenter: Segmenter,
    request: PredictionRequest,
    budget: MemoryBudget,
    store,
    provenance: dict[str, str | None],
) -> dict:
    work = partial(store_upload, data, segmenter, request, store, provenance)
    case = budget.run(estimate_bytes(data, "json"), work)
    store.expire_old_cases()
    return case


@router.post(
    "/cases",
    status_code=201,
    response_model=CaseBody,
    responses={**RESPONSES, 400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody}},
)
async def create_case(
    prediction_request: PredictionRequestDependency,
    segmenter: SegmenterDependency,
    settings: SettingsDependency,
    caller: ReviewerDependency,
    store: CaseStoreDependency,
    request: Request,
    file: Annotated[UploadFile | None, File(description="the dermoscopic image (JPEG, PNG, TIFF, ...)")] = None,
    external_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[\x20-\x7e]+$",
            description="your own identifier for this image (a record or accession number), kept with the case",
        ),
    ] = None,
) -> JSONResponse:
    """Segments the image as POST /predict/ does, and keeps it as a case waiting for review, with its file
    name and `external_id`, so that it can be traced back."""
    data = await read_single_upload(request, file, settings)
    provenance = {"filename": upload_name(file.filename), "external_id": external_id}
    state = request.app.state
    budget = state.memory_budget
    work = partial(
        segment_and_store,
        data,
        segmenter=segmenter,
        request=prediction_request,
        budget=budget,
        store=store,
        provenance=provenance,
    )
    with state.inference_gate.admit() as admission:
        case = await admission.run(state.inference_executor, work)
    return JSONResponse(case, status_code=201)


def upload_name(name: str | None) -> str | None:
    """The client's file name without any folders, printable characters only, at most 255 of them: a label
    to show and export, never a path."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(character for character in base if character.isprintable())[:255].strip()
    return printable or None


@router.get("/cases", response_model=Worklist, responses=RESPONSES)
def worklist(
    caller: ReaderDependency,
    store: CaseStoreDependency,
    status: Annotated[
        Literal["pending", "accepted", "corrected", "rejected"] | None, Query(description="only these; all if unset")
    ] = None,
    order: Annotated[
        Literal["uncertainty", "newest"],
        Query(description="uncertainty: recommended for review first, then the most uncertain; newest: latest first"),
    ] = "uncertainty",
    limit: Annotated[int, Query(ge=1, le=200, description="cases in one page")] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
    image_sha256: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-f]{64}$", description="only cases of this image (the sha256 of the uploaded bytes)"),
    ] = None,
) -> dict:
    """The worklist, a page at a time, with how many cases have each status."""
    cases, next_cursor = store.worklist(status, order, limit, cursor, image_sha256)
    return {"cases": cases, "next_cursor": next_cursor, "counts": store.counts()}


@router.get("/cases/{case_id}", response_model=CaseBody, responses=RESPONSES)
def get_case(case_id: CaseId, caller: ReaderDependency, store: CaseStoreDependency) -> dict:
    return store.get(case_id)


@router.get("/cases/{case_id}/history", response_model=CaseHistory, responses=RESPONSES)
def case_history(case_id: CaseId, caller: ReaderDependency, store: CaseStoreDependency) -> dict:
    """Every verdict the case has had, oldest first, with who gave it and when: the audit trail."""
    return {"case_id": case_id, "events": store.history(case_id)}


@router.get(
    "/cases/{case_id}/image",
    response_class=Response,
    responses={**RESPONSES, 200: {"content": {"image/*": {}}, "description": "the image as uploaded"}},
)
def case_image(
    case_id: CaseId,
    caller: ReaderDependency,
    store: CaseStoreDependency,
    settings: SettingsDependency,
    original: Annotated[
        bool, Query(description="a DICOM case: the DICOM file as uploaded, not its picture as PNG")
    ] = False,
):
    """The picture as uploaded; a DICOM case's as PNG, which a browser can show (`original=true`: the file)."""
    data, media_type = store.image(case_id)
    if media_type == "application/dicom" and not original:
        data, media_type = dicom_picture_png(data, settings), "image/png"
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


def dicom_picture_png(data: bytes, settings: Settings) -> bytes:
    """A stored DICOM upload's picture, full size, as PNG (it was read once already: it reads again)."""
    decoded = decode_upload(data, settings.max_pixels, settings.min_side, None)
    return encode_png_bands([decoded.rgb], decoded.original_width, decoded.original_height)


@router.get(
    "/cases/{case_id}/mask",
    response_class=Response,
    responses={**RESPONSES, 200: {"content": {"image/png": {}}, "description": "8-bit 0/255, at the image's size"}},
)
def case_mask(
    case_id: CaseId,
    caller: ReaderDependency,
    store: CaseStoreDependency,
    source: Annotated[
        Literal["current", "model"], Query(description="current: the correction if there is one; model: the model's")
    ] = "current",
):
    return Response(
        encode_mask_png(store.mask(case_id, source)), media_type="image/png", headers={"Cache-Control": "no-store"}
    )


@router.put(
    "/cases/{case_id}/review",
    response_model=CaseBody,
    responses={**RESPONSES, 400: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def review_case(
    case_id: CaseId,
    change: ReviewChange,
    caller: ReviewerDependency,
    store: CaseStoreDependency,
) -> dict:
    """Accept the model's mask, save a corrected one, reject the case, or set it back to pending."""
    mask = change.mask_rle.model_dump() if change.mask_rle is not None else None
    confirmed = change.confirm_out_of_distribution
    return store.review(case_id, change.status, mask, change.version, caller.key_id, confirmed)


@router.post(
    "/cases/{case_id}/proposal",
    response_model=ProposalBody,
    responses={**RESPONSES, 503: {"model": ErrorBody}},
)
async def propose_mask(
    case_id: CaseId,
    caller: ReviewerDependency,
    store: CaseStoreDependency,
    segmenter: SegmenterDependency,
    request: Request,
    proposal_request: ProposalRequest | None = None,
) -> dict:
    """A mask proposed by LiteMedSAM, a box-prompted medical foundation model, for the lesion in `box`; without
    a box, for the box around the model's own mask. A starting point for a correction: nothing is saved until
    the reviewer sends it with PUT /cases/{id}/review. The case's image is encoded once (about a second) and
    kept; a further box costs only the mask decoder."""
    data, _ = store.image(case_id)
    box = proposal_request.box if proposal_request is not None else None
    if box is None:
        box = box_around(store.mask(case_id, "model"))
    state = request.app.state
    # The picture's decode, as a mask request's, and the encoder's own working memory, which does not grow with
    # the picture (it always sees 256×256).
    reservation = estimate_bytes(data, "mask") + PROPOSAL_ENCODER_BYTES
    work = partial(state.memory_budget.run, reservation, partial(segmenter.propose, data, box))
    try:
        with state.inference_gate.admit() as admission:
            proposal = await admission.run(state.inference_executor, work)
    except InvalidBox as error:
        raise RequestRejected(422, str(error)) from error
    except CheckpointError as error:  # the proposer's graphs missing or altered: the service itself is sound
        raise RequestRejected(503, f"box-prompted proposals are not available here: {error}") from error
    return {
        "mask_rle": rle_encode(proposal.mask),
        "model": segmenter.proposer.name,
        "box": list(proposal.box),
        "predicted_iou": proposal.predicted_iou,
        "timings_ms": {
            "image_embedding": 0.0 if proposal.embedding_kept else round(proposal.embedding_seconds * 1000, 1),
            "mask_decoder": round(proposal.seconds * 1000, 1),
        },
    }


@router.delete("/cases/{case_id}", status_code=204, response_class=Response, responses=RESPONSES)
def delete_case(case_id: CaseId, caller: AdminDependency, store: CaseStoreDependency):
    """Deletes the case, its review, and its image unless another case has the same image."""
    store.delete(case_id)
    return Response(status_code=204)
