"""Every error leaves as JSON `{"detail": ...}` with a 4xx status; nothing leaks a traceback."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lesionseg.imaging.decode import ImageRejected

logger = logging.getLogger("lesionseg.api")


class RequestRejected(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImageRejected)
    async def image_rejected(request: Request, error: ImageRejected) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"detail": error.message})

    @app.exception_handler(RequestRejected)
    async def request_rejected(request: Request, error: RequestRejected) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"detail": error.detail})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; the server log has the details"})
