"""Every error leaves as JSON `{"detail": ...}` with a 4xx/503 status; nothing leaks a traceback. What no
handler here expects is answered 500, with its request id, by `UnhandledErrorMiddleware`."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lesionseg.imaging.decode import ImageRejected
from lesionseg.reviews.errors import CaseError


class RequestRejected(HTTPException):
    """A request we refuse, with the status and the reason the client sees. Being an HTTPException,
    it also passes through FastAPI's body parsing, which wraps any other error in a vague 400."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)


# FastAPI's own words when a body cannot even be decoded (JSON that is not UTF-8, say), and ours for it.
FASTAPI_BODY_ERROR = "There was an error parsing the body"
UNREADABLE_BODY = "the request body cannot be read: send UTF-8 JSON, or multipart/form-data, as this route documents"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_exception(request: Request, error: HTTPException) -> JSONResponse:
        """Our refusals as they are; a library's vague body error in our words."""
        detail = UNREADABLE_BODY if error.detail == FASTAPI_BODY_ERROR else error.detail
        return JSONResponse(status_code=error.status_code, content={"detail": detail}, headers=error.headers)

    @app.exception_handler(ImageRejected)
    async def image_rejected(request: Request, error: ImageRejected) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"detail": error.message})

    @app.exception_handler(CaseError)
    async def case_error(request: Request, error: CaseError) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"detail": error.message})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        """One readable sentence in `detail`, like every other error; the details in `errors`."""
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"][1:]) or str(item["loc"][0])
            problems.append(f"{where}: {item['msg']}")
        errors = [{"location": [str(part) for part in item["loc"]], "message": item["msg"]} for item in error.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems), "errors": errors})
