"""Prometheus metrics and structured JSON logs, one registry and one logger per app."""

import json
import logging
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The service's own registry, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lesionseg_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lesionseg_request_seconds",
            "HTTP latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "lesionseg_inference_seconds",
            "model time per image (trunk + MC tail)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "lesionseg_inference_queue_depth",
            "requests admitted to inference and not yet answered",
            registry=self.registry,
        )
        self.samples = Histogram(
            "lesionseg_mc_samples",
            "MC-dropout samples per request",
            buckets=(1, 2, 5, 10, 20, 30, 64),
            registry=self.registry,
        )
        self.cancelled_work = Counter(
            "lesionseg_cancelled_work",
            "pieces of work stopped at a check because their request timed out or went away",
            registry=self.registry,
        )
        self.rejected_overload = Counter(
            "lesionseg_overload_rejections", "requests answered 503 because the queue was full", registry=self.registry
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log collectors parse without configuration."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def uvicorn_log_config(level: str = "INFO") -> dict:
    """uvicorn's own messages (start-up, shutdown, errors) as JSON lines too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("lesionseg")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
