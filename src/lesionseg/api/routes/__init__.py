"""The service's routes, one module per resource (as in FastAPI's full-stack template): the pages, the
probes and model card, predictions, and the review worklist's cases. `router` holds them all."""

from fastapi import APIRouter

from lesionseg.api.routes import cases, health, pages, predict

router = APIRouter()
for module in (pages, health, predict, cases):
    router.include_router(module.router)
