"""Shared objects handed to routes: the settings, the model loaded once at start-up, the prediction a
request asks for, the case store, and who is calling. Routes name them by their `Annotated` aliases."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Query, Request

from lesionseg.api.errors import RequestRejected
from lesionseg.config import ROLES, Settings
from lesionseg.predictor import Predictor
from lesionseg.segmenter import MAX_SEED, PredictionRequest, Segmenter
from lesionseg.uncertainty.coverage import MAX_COVERAGE, MIN_COVERAGE
from lesionseg.uncertainty.sampling import MAX_SAMPLES, MIN_SAMPLES

if TYPE_CHECKING:  # the worklist's modules load only when a database is configured
    from lesionseg.reviews.cases import CaseStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise RequestRejected(503, "the model is not loaded yet", headers={"Retry-After": "5"})
    return predictor


SettingsDependency = Annotated[Settings, Depends(get_settings)]
PredictorDependency = Annotated[Predictor, Depends(get_predictor)]


def get_segmenter(request: Request, predictor: PredictorDependency) -> Segmenter:
    # `predictor` first: it answers 503 until the model is loaded, and the segmenter is made with it.
    return request.app.state.segmenter


SegmenterDependency = Annotated[Segmenter, Depends(get_segmenter)]


def get_prediction_request(
    predictor: PredictorDependency,
    settings: SettingsDependency,
    samples: Annotated[int | None, Query(ge=MIN_SAMPLES, le=MAX_SAMPLES, description="MC-dropout passes")] = None,
    threshold: Annotated[float | None, Query(gt=0.0, lt=1.0, description="mask = mean probability ≥ threshold")] = None,
    seed: Annotated[int | None, Query(ge=0, le=MAX_SEED, description="fixes the dropout masks")] = None,
    coverage: Annotated[
        float | None,
        Query(
            ge=MIN_COVERAGE,
            le=MAX_COVERAGE,
            description="instead of threshold: the mask keeps at least this expected fraction of lesion pixels "
            "(conformal risk control, calibrated on held-out dermoscopy)",
        ),
    ] = None,
    tta: Annotated[
        bool | None,
        Query(
            description="sample the image flipped both ways too and pool the samples (default: on, unless "
            "LESIONSEG_DEFAULT_TTA=false; off infers up to 2.6× as fast)"
        ),
    ] = None,
) -> PredictionRequest:
    """The query parameters that /predict/, /predict/batch and /cases share, as the one request type, with
    the settings' defaults; a coverage this model cannot guarantee is refused here, before any upload is read."""
    if coverage is not None and not predictor.coverage_thresholds:
        raise RequestRejected(422, "this model has no coverage calibration, so coverage cannot be guaranteed")
    try:
        return PredictionRequest.with_defaults(settings, samples, seed, threshold, coverage, tta)
    except ValueError as error:
        raise RequestRejected(422, str(error)) from None


PredictionRequestDependency = Annotated[PredictionRequest, Depends(get_prediction_request)]


def get_case_store(request: Request) -> "CaseStore":
    store = request.app.state.case_store
    if store is None:
        raise RequestRejected(
            404, "the review worklist is off: start the service with LESIONSEG_DATABASE_URL set to turn it on"
        )
    return store


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the role and the identifier of their API key (admin and None without keys)."""

    role: str
    key_id: str | None


def require_role(least: str):
    """A dependency that lets through callers whose role is `least` or above, and returns them."""

    def caller(request: Request) -> Caller:
        role = getattr(request.state, "api_role", "admin")
        if ROLES.index(role) < ROLES.index(least):
            raise RequestRejected(403, f"this needs the {least} role or above; this API key is a {role}")
        return Caller(role, getattr(request.state, "api_key_id", None))

    return caller


ReaderDependency = Annotated[Caller, Depends(require_role("reader"))]
ReviewerDependency = Annotated[Caller, Depends(require_role("reviewer"))]
AdminDependency = Annotated[Caller, Depends(require_role("admin"))]
# Any: the store's module loads only with a database, and FastAPI would resolve a forward reference.
CaseStoreDependency = Annotated[Any, Depends(get_case_store)]
