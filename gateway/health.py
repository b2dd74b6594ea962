"""Liveness, readiness (the model's workers, not TorchServe's /ping) and the index."""

from flask import Blueprint

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
