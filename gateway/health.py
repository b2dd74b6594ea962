"""Liveness, readiness (the model's workers, not TorchServe's /ping) and the index."""

from flask import Blueprint, current_app

from gateway.errors import ApiError, unavailable

bp = Blueprint("health", __name__)


def ready_workers(description: dict) -> int:
    """READY workers of one version (TorchServe's /ping says Healthy while they crash)."""
    return sum(1 for w in description.get("workers", []) if w.get("status") == "READY")


@bp.get("/")
def index():
    return {
        "name": "image-classifier-gateway",
        "model": current_app.extensions["gateway"].settings.model_name,
        "links": {"docs": "/docs", "openapi": "/openapi.json", "token": "/token",
                  "predict": "/predict", "health": "/healthz", "ready": "/readyz"},
    }


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    services = current_app.extensions["gateway"]
    try:
        default = services.torchserve.describe()[0]
    except ApiError as exc:
        raise unavailable(f"not ready: {exc.detail}") from None
    except IndexError:
        raise unavailable("not ready: model has no default version") from None
    ready = ready_workers(default)
    if not ready:
        raise unavailable(f"not ready: {default.get('modelName')} "
                          f"{default.get('modelVersion')} has no READY worker")
    return {"status": "ready", "model_name": default.get("modelName"),
            "model_version": default.get("modelVersion"), "ready_workers": ready}
