"""The HTTP layer: app factory, routes, error handlers. It knows bytes and PNGs, never tensors."""

from lesionseg.api.app import create_app

__all__ = ["create_app"]
