"""The operational endpoints: the index, liveness, readiness (the model's workers, not
TorchServe's /ping) and GET /metrics."""

from flask import Blueprint, Response
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry,
                               generate_latest, multiprocess)

from gateway.errors import ApiError, unavailable
from gateway.readiness import default_version_ready, ready_workers
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
    torchserve = services().torchserve
    try:
        described = torchserve.describe()
    except ApiError as exc:
        raise unavailable(f"not ready: {exc.detail}") from None
    ready, reason = default_version_ready(described, torchserve.model_name)
    if not ready:
        raise unavailable(f"not ready: {reason}")
    default = described[0]
    return {"status": "ready", "model_name": default.get("modelName"),
            "model_version": default.get("modelVersion"),
            "ready_workers": len(ready_workers(default))}


@bp.get("/metrics")
def metrics():
    """Every gunicorn worker's samples, aggregated, when PROMETHEUS_MULTIPROC_DIR is set."""
    if services().settings.prometheus_multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
