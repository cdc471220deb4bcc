"""Shared objects handed to routes: the settings and the model loaded once at start-up."""

from fastapi import Request

from lesionseg.api.errors import RequestRejected
from lesionseg.config import Settings
from lesionseg.predictor import Predictor


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise RequestRejected(503, "the model is not loaded yet", headers={"Retry-After": "5"})
    return predictor
