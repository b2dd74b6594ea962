"""The Open Inference Protocol (KServe v2) over our tokens: the HTTP adapter of /v2/...

Inference goes through the same prediction pipeline as /predict (quota, in-flight
slot taken before the body is read, routing with canary and shadow, one log row per
image); gateway/predictions/oip_codec.py reads and writes its bodies. Errors are {"error": "..."}
with /predict's statuses.
"""

import time

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core import tracing
from core.errors import ApiError, body_too_large
from gateway.models.control_snapshot import ModelState
from gateway.models.versions import check_version, version_key
from gateway.predictions import oip_codec
from gateway.predictions.pipeline import PredictionRequest
from gateway.web import observability
from gateway.web.auth import authenticate
from gateway.web.extension import services
from gateway.web.responses import oip_error

bp = Blueprint("oip", __name__, url_prefix="/v2")


@bp.errorhandler(ApiError)
def _protocol_error(exc: ApiError):
    return oip_error(exc)


@bp.errorhandler(HTTPException)
def _protocol_http_error(exc: HTTPException):
    return oip_error(ApiError(exc.code or 500, exc.description or exc.name))


def _model(name: str, version: str | None) -> ModelState:
    """The model's state (404 for a model not declared); 422 for a version string that
    is not ours."""
    if version is not None:
        check_version(version)
    return services().snapshot.current().model(name)


@bp.get("")
def server_metadata():
    return {"name": "image-classifier-gateway", "version": "1.0",
            "extensions": ["binary_tensor_data"]}


@bp.get("/health/live")
def live():
    return {"live": True}


@bp.get("/health/ready")
def ready():
    services().readiness()  # /readyz's rule: 503 with its reason
    return {"ready": True}


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name, version=None):
    authenticate("predict", name)
    state = _model(name, version)
    state.require_version(version)
    return {"name": name, "versions": sorted(state.serving, key=version_key),
            "platform": "pytorch_torchserve",
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": out, "datatype": kind, "shape": [-1, -1]}
                        for out, (kind, _) in oip_codec.OUTPUTS.items()]}


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name, version=None):
    authenticate("predict", name)
    _model(name, version)
    services().readiness(name, version)
    return {"name": name, "ready": True}


def _body(max_bytes: int) -> bytes:
    """The whole body, bounded (Werkzeug's MAX_CONTENT_LENGTH, chunked bodies too)."""
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise body_too_large(max_bytes) from None


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name, version=None):
    svc = services()
    started = time.perf_counter()
    user = authenticate("predict", name)
    authenticated = time.perf_counter() - started
    outcome = svc.pipeline.predict(PredictionRequest(
        request_id=g.request_id, trace_id=tracing.trace_id(), username=user.username,
        own_quota=user.predict_rate_limit, model=name,
        pinned=version, numbered=True,
        read=lambda: oip_codec.decode(_body(request.max_content_length),
                                      request.headers.get(oip_codec.HEADER_LENGTH),
                                      svc.handler)))
    if outcome.error:
        response = oip_error(outcome.error)
    else:
        encoded = oip_codec.encode(name, outcome.payload, g.request_id, outcome.answers)
        response = Response(encoded.body, mimetype=encoded.mimetype, headers=encoded.headers)
    return observability.report(response, {"auth": authenticated, **outcome.stages},
                                outcome.model_version, outcome.upstream_seconds)
