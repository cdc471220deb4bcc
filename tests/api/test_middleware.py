"""Each middleware on its own, around a small Starlette app, stacked as `create_app` stacks them: the request id
reaches every answer, the access log counts every answer, an unexpected error becomes a 500 that names the
request, and the time limit tells a slow upload (408) from slow work (503). In process: the fast tier."""

import asyncio
import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lesionseg.api.middleware import (
    AccessLogMiddleware,
    RequestGuardMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    TimeLimitMiddleware,
    UnhandledErrorMiddleware,
)
from lesionseg.api.observability import Metrics

# No answer here depends on how fast this machine is: the other routes get a limit they never meet, and the
# endless route never finishes, however long the limit.
GENEROUS_LIMIT_SECONDS = 600.0


async def fine(request: Request) -> JSONResponse:
    return JSONResponse({"request_id": request.scope["state"]["request_id"]})


async def broken(request: Request) -> JSONResponse:
    raise RuntimeError("a detail for the log only")


async def endless(request: Request) -> JSONResponse:
    await request.body()
    await asyncio.Event().wait()  # work that never finishes


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse("<p>page</p>")


def stacked(metrics: Metrics, time_limit: float = GENEROUS_LIMIT_SECONDS) -> TestClient:
    app = Starlette(
        routes=[
            Route("/fine", fine),
            Route("/broken", broken),
            Route("/endless", endless, methods=["POST"]),
            Route("/", page),
            Route("/other", page),
        ]
    )
    app.add_middleware(TimeLimitMiddleware, request_timeout_seconds=time_limit)
    app.add_middleware(RequestGuardMiddleware, allowed_hosts=None, cors_origins=[], max_header_count=20)
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def counted(metrics: Metrics, status: int) -> float:
    value = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("status") == str(status):
                value += sample.value
    return value


def test_a_supplied_request_id_is_kept_and_a_bad_one_replaced(metrics):
    client = stacked(metrics)
    kept = client.get("/fine", headers={"X-Request-ID": "case-17"})
    assert kept.headers["x-request-id"] == "case-17" == kept.json()["request_id"]
    replaced = client.get("/fine", headers={"X-Request-ID": "x" * 129})
    assert len(replaced.headers["x-request-id"]) == 32 and replaced.json()["request_id"] != "x" * 129


def test_an_unexpected_error_is_a_500_naming_the_request_and_the_log_has_the_rest(metrics, caplog):
    with caplog.at_level(logging.ERROR, logger="lesionseg.access"):
        answer = stacked(metrics).get("/broken", headers={"X-Request-ID": "abc"})
    assert answer.status_code == 500 and answer.headers["connection"] == "close"
    assert answer.json() == {"detail": "internal error; the server log has the details under request id abc"}
    assert answer.headers["x-content-type-options"] == "nosniff", "an error carries the safe headers too"
    assert "a detail for the log only" in caplog.text and "a detail" not in answer.text
    assert counted(metrics, 500) == 1


def test_the_guard_refuses_too_many_headers_and_the_refusal_is_logged(metrics):
    answer = stacked(metrics).get("/fine", headers={f"x-extra-{index}": "1" for index in range(25)})
    assert answer.status_code == 431 and "the limit is 20" in answer.json()["detail"]
    assert answer.headers["x-request-id"] and counted(metrics, 431) == 1


def test_work_past_the_time_limit_is_a_503_to_retry(metrics):
    answer = stacked(metrics, time_limit=0.5).post("/endless", content=b"done")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "longer than 0.5 s; try again" in answer.json()["detail"]


def test_only_the_pages_get_the_content_policy(metrics):
    client = stacked(metrics)
    assert "frame-ancestors 'none'" in client.get("/").headers["content-security-policy"]
    other = client.get("/other")
    assert "content-security-policy" not in other.headers and other.headers["x-frame-options"] == "DENY"
