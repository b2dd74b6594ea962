"""Per-request observability: request id, one JSON log line (with the trace id,
core.tracing), request metrics, and the Server-Timing header of predictions.

Request context lives on flask.g as Flask intends: the request id (set before the
view) and the authenticated user (gateway.web.auth). What a prediction's view learned
travels with its response (`report`), not through g.
"""

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from flask import Flask, Response, g, request

from core import tracing
from core.settings import Settings
from gateway import metrics

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Probes and scrapes: no spans.
UNTRACED_ROUTES = ("/healthz", "/readyz", "/metrics", "/torchserve/ping")
access_log = logging.getLogger("gateway.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the record's message dict plus time and level."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                 "level": record.levelname.lower(), "logger": record.name}
        if isinstance(record.msg, dict):
            entry.update(record.msg)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging() -> None:
    """JSON lines on stderr for every gateway logger (idempotent)."""
    logger = logging.getLogger("gateway")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def server_timing(stages: dict[str, float]) -> str:
    """W3C Server-Timing: where a prediction's milliseconds went (gateway stages: auth,
    quota, read, check, upstream, log, app; TorchServe handler's: preprocess, inference,
    postprocess). Browsers' developer tools and `make bench` read it."""
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in stages.items())


@dataclass(frozen=True)
class PredictionReport:
    stages: Mapping[str, float]  # seconds per stage, in the order they ran
    model_version: str | None
    upstream_seconds: float | None


def report(response: Response, stages: Mapping[str, float], model_version: str | None,
           upstream_seconds: float | None) -> Response:
    """Attach what the access log and Server-Timing report of a prediction's answer."""
    response.prediction_report = PredictionReport(stages, model_version, upstream_seconds)
    return response


def _route() -> str:
    """The request's URL rule, the label of its metrics, log line and span."""
    return request.url_rule.rule if request.url_rule else "unmatched"


def init_app(app: Flask, settings: Settings) -> None:
    configure_logging()
    tracing.configure(settings)

    @app.before_request
    def start_request():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()
        route = _route()
        if route not in UNTRACED_ROUTES:
            g.trace = tracing.start_request(request.headers, f"{request.method} {route}")

    @app.after_request
    def finish_request(response):
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = _route()
        response.headers["X-Request-ID"] = g.get("request_id", "")
        prediction = getattr(response, "prediction_report", None)
        if prediction is not None:
            response.headers["Server-Timing"] = server_timing(
                {**prediction.stages, "app": elapsed})
        metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        metrics.REQUEST_LATENCY.labels(route, request.method).observe(elapsed)
        if response.status_code == 429:
            metrics.RATE_LIMITED.labels(route).inc()
        upstream = prediction.upstream_seconds if prediction else None
        access_log.info({
            "event": "request", "request_id": g.get("request_id"), "trace_id": tracing.trace_id(),
            "user": g.get("user"),
            "method": request.method, "route": route, "path": request.path,
            "status": response.status_code, "latency_ms": round(elapsed * 1000, 2),
            "model_version": prediction.model_version if prediction else None,
            "upstream_ms": round(upstream * 1000, 2) if upstream is not None else None,
        })
        tracing.finish_request(g.pop("trace", None), response.status_code)
        return response
