"""The pages: `/` (one image) and `/review` (the worklist and mask editor). Plain files; the data they
show comes from the other routes."""

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@functools.cache
def page_html(name: str) -> str:
    return resources.files("lesionseg.api").joinpath(f"static/{name}").read_text()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def web_page() -> HTMLResponse:
    return HTMLResponse(page_html("index.html"))


@router.get("/review", response_class=HTMLResponse, include_in_schema=False)
def review_page() -> HTMLResponse:
    """The review worklist and mask editor (the worklist itself needs LESIONSEG_DATABASE_URL)."""
    return HTMLResponse(page_html("review.html"))
