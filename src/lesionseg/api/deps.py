"""Shared objects handed to routes: the settings, the model loaded once at start-up, the case store,
and who is calling."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from lesionseg.api.errors import RequestRejected
from lesionseg.config import ROLES, Settings
from lesionseg.predictor import Predictor

if TYPE_CHECKING:  # the worklist's modules load only when a database is configured
    from lesionseg.reviews.cases import CaseStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise RequestRejected(503, "the model is not loaded yet", headers={"Retry-After": "5"})
    return predictor


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
