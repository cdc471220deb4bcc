"""The FastAPI app factory: settings in, a running service with the model loaded once out."""

from contextlib import asynccontextmanager

import numpy as np
import torch
from fastapi import FastAPI

from lesionseg import __version__
from lesionseg.api.errors import install_error_handlers
from lesionseg.api.routes import router
from lesionseg.config import Settings
from lesionseg.predictor import Predictor


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        predictor = Predictor.from_checkpoint(settings.weights)
        # One pass at start-up, so the first user does not pay for lazy initialisation.
        predictor.predict(np.zeros((predictor.input_size, predictor.input_size, 3), np.uint8), samples=2, seed=0)
        app.state.predictor = predictor
        yield

    app = FastAPI(
        title="lesionseg",
        version=__version__,
        description="Skin-lesion segmentation with per-pixel Monte Carlo Dropout uncertainty.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    return app
