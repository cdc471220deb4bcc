"""The probes and what the service says of itself: /health, /ready, /metrics, /info."""

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lesionseg import __version__
from lesionseg.api.deps import PredictorDependency
from lesionseg.api.schemas import ErrorBody, Health, ModelCard

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    """200 while the process is alive, whether or not the model is loaded (that is /ready)."""
    predictor = request.app.state.predictor
    return Health(status="ok", model=predictor.config.name if predictor else None, version=__version__)


@router.get("/ready", response_model=Health, responses={503: {"model": ErrorBody}})
def ready(predictor: PredictorDependency) -> Health:
    """200 once the model is loaded, its checksum verified and one warm-up pass done."""
    return Health(status="ready", model=predictor.config.name, version=__version__)


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(request: Request) -> PlainTextResponse:
    registry = request.app.state.metrics.registry
    return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/info", response_model=ModelCard)
def info(predictor: PredictorDependency) -> ModelCard:
    """The model card: what the model is, how it was trained and measured, and its limits."""
    identity = predictor.identity
    return ModelCard(**identity, backend=predictor.backend_choice, card=predictor.model_card)
