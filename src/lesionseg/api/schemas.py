"""Typed response bodies, so the OpenAPI document says exactly what comes back."""

from pydantic import BaseModel


class Health(BaseModel):
    status: str
    model: str
    version: str


class ErrorBody(BaseModel):
    detail: str
