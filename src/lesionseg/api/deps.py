"""Shared objects handed to routes: the settings and the model loaded once at start-up."""

from fastapi import Request

from lesionseg.config import Settings
from lesionseg.predictor import Predictor


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor
