"""The FastAPI app factory: settings in, a running service with the model loaded once out."""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources

import numpy as np
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from lesionseg import __version__
from lesionseg.api.errors import install_error_handlers
from lesionseg.api.inference_queue import InferenceGate
from lesionseg.api.memory_budget import MemoryBudget, configure_malloc
from lesionseg.api.middleware import (
    AccessLogMiddleware,
    ApiKeyMiddleware,
    BodySizeLimitMiddleware,
    RequestGuardMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    TimeLimitMiddleware,
    UnhandledErrorMiddleware,
    allowed_host_names,
)
from lesionseg.api.observability import Metrics, configure_logging
from lesionseg.api.routes import router
from lesionseg.config import Settings
from lesionseg.predictor import Predictor
from lesionseg.segmenter import Segmenter

# Multipart framing around the file: boundaries, part headers, small form fields.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def reviewer_id_secret(settings: Settings) -> bytes:
    """LESIONSEG_REVIEWER_ID_SECRET; else, with the worklist on, a random secret kept in the storage folder
    (made once, by whichever worker starts first, and read by the rest and by every restart); else a random
    one for this process, as no identifier is kept."""
    if settings.reviewer_id_secret:
        return settings.reviewer_id_secret.encode()
    if not settings.database_url:
        return os.urandom(32)
    from lesionseg.reviews.storage import shared_secret

    return shared_secret(settings.storage_dir)


def load_model(settings: Settings) -> Predictor:
    """Loaded (checksum verified) and warmed before the port opens: a bad checkpoint stops start-up."""
    predictor = Predictor.from_checkpoint(
        settings.weights,
        settings.backend,
        settings.allow_pickle_checkpoints,
        settings.inference_threads,
        settings.max_batch_size,
        settings.site_profile,
        settings.device,
        settings.cuda_graphs,
    )
    predictor.predict(np.zeros((predictor.input_size, predictor.input_size, 3), np.uint8), samples=2, seed=0)
    return predictor


def open_case_store(settings: Settings):
    """The worklist, migrated and cleared of what a crash or the retention period left, before the port opens;
    None without a database."""
    if not settings.database_url:
        return None
    from lesionseg.reviews.cases import CaseStore

    store = CaseStore.open(
        settings.database_url,
        settings.storage_dir,
        settings.retention_days,
        settings.storage_min_free_mb * 1024 * 1024,
    )
    store.clean_up(settings.orphan_grace_seconds)
    return store


# The headers a browser on another origin may read: the request id and what a result says about trust.
EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-Lesionseg-Seed",
    "X-Lesionseg-Threshold",
    "X-Lesionseg-Out-Of-Distribution",
    "X-Lesionseg-Ood-Score",
    "X-Lesionseg-Review-Recommended",
]


def add_middleware(app: FastAPIOffline, settings: Settings, metrics: Metrics) -> None:
    """Added innermost first; from the outside in: the request id (every later step logs it), the access log
    (it sees every answer, errors and refusals too), the security headers, the 500 for an unexpected error, the
    guard, the time limit, then CORS, the API key and the body size nearest the routes."""
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        max_json_body_bytes=settings.max_json_bytes,
    )
    if settings.api_key_roles:
        app.add_middleware(
            ApiKeyMiddleware, api_key_roles=settings.api_key_roles, identifier_secret=reviewer_id_secret(settings)
        )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "X-Request-ID"],
            expose_headers=EXPOSED_HEADERS,
        )
    app.add_middleware(TimeLimitMiddleware, request_timeout_seconds=settings.request_timeout_seconds)
    app.add_middleware(
        RequestGuardMiddleware,
        allowed_hosts=allowed_host_names(settings.allowed_hosts, settings.host),
        cors_origins=settings.cors_origin_list,
        max_header_count=settings.max_header_count,
    )
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)


def create_app(settings: Settings | None = None) -> FastAPIOffline:
    """The app; `settings` default to the environment (LESIONSEG_*), which is how workers get them."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app):
        predictor = load_model(settings)
        app.state.case_store = open_case_store(settings)
        # One per process: it keeps the box proposer's image embeddings from one request to the next.
        app.state.segmenter = Segmenter(predictor, settings)
        app.state.predictor = predictor  # ready from here: /ready answers 200
        yield
        app.state.predictor = app.state.segmenter = None
        app.state.inference_executor.shutdown(wait=True)
        if app.state.case_store is not None:
            app.state.case_store.close()

    app = FastAPIOffline(
        title="lesionseg",
        version=__version__,
        description="Skin-lesion segmentation with per-pixel Monte Carlo Dropout uncertainty.",
        lifespan=lifespan,
        static_url="/static/docs",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.predictor = app.state.segmenter = None
    app.state.case_store = None
    app.state.inference_gate = InferenceGate(settings.max_queue, metrics)
    configure_malloc()
    app.state.memory_budget = MemoryBudget(settings.memory_budget_mb * 1024 * 1024)
    # Decoding, inference and rendering run on a few dedicated threads: one request's decoding or PNG
    # encoding overlaps another's inference (one at a time, its own threads using every core), and
    # as many requests as one trunk batch holds can wait for it together. Few threads keep few malloc
    # arenas: across the default thread pool, resident memory kept growing under a 2-minute,
    # 16-client test; with these it rises to its working set in seconds and stays there.
    app.state.inference_executor = ThreadPoolExecutor(
        max_workers=max(2, settings.max_batch_size), thread_name_prefix="inference"
    )
    install_error_handlers(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(resources.files("lesionseg.api") / "static")), name="static")
    add_middleware(app, settings, metrics)
    return app
