"""The operational endpoints: the index, liveness, readiness (a live replica serves the
default version, as its agent reports) and GET /metrics."""

from flask import Blueprint, Response
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry,
                               generate_latest, multiprocess)

from gateway.services import services

bp = Blueprint("health", __name__)


@bp.get("/")
def index():
    return {
        "name": "image-classifier-gateway",
        "model": services().settings.model_name,
        "links": {"docs": "/docs", "openapi": "/openapi.json", "token": "/token",
                  "predict": "/predict", "health": "/healthz", "ready": "/readyz"},
    }


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    return {"status": "ready", **services().versions.ready()}


@bp.get("/metrics")
def metrics():
    """Every gunicorn worker's samples, aggregated, when PROMETHEUS_MULTIPROC_DIR is set."""
    if services().settings.prometheus_multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
