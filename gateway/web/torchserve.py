"""TorchServe's own inference and management APIs at the gateway, under one base URL:
`/torchserve` (point a TorchServe client's inference and management addresses at
`http://gateway:8000/torchserve`).

Inference (`POST|PUT /predictions/{model}[/{version}]`, a raw body or a form's one
part) goes through the prediction pipeline as /predict does (token, quota, in-flight
bound, rollouts, one log row) and answers the handler's output as TorchServe gives it.
Management calls change the declared state (gateway.models.torchserve_api). Both take
our bearer tokens, or a service account's client id and secret by HTTP Basic (clients
such as mlflow-torchserve send no bearer header). Errors are TorchServe's
`{"code", "type", "message"}`.
"""

import time

from flask import Blueprint, Response, g, jsonify, request
from limits.errors import StorageError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from core import tracing
from core.errors import ApiError, database_down, rate_limit_storage_down
from gateway.models.torchserve_api import Registration, TorchServeManagement, error_body
from gateway.predictions.pipeline import PredictionRequest
from gateway.predictions.uploads import read_body
from gateway.web import observability
from gateway.web.auth import actor, authenticate
from gateway.web.extension import services

bp = Blueprint("torchserve", __name__, url_prefix="/torchserve")


def _error(exc: ApiError) -> Response:
    body, status = error_body(exc)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(exc.headers)
    return response


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return _error(exc)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _error(ApiError(exc.code or 500, exc.description or exc.name))


@bp.errorhandler(SQLAlchemyError)
def _database_down(exc: SQLAlchemyError):
    return _error(database_down())


@bp.errorhandler(StorageError)
def _limits_storage_down(exc: StorageError):
    return _error(rate_limit_storage_down())


@bp.after_request
def reread_control_state(response):
    """A management change reaches this process's predictions at once."""
    if request.method != "GET" and request.endpoint != "torchserve.predict":
        services().snapshot.refresh()
    return response


# ---- inference ------------------------------------------------------------------------
@bp.get("/ping")
def ping():
    """TorchServe's health answer over /readyz's rule (MODEL_NAME served, log takes rows)."""
    try:
        services().readiness()
    except ApiError:
        return {"status": "Unhealthy"}, 503
    return {"status": "Healthy"}


@bp.route("/predictions/<model>", methods=["POST", "PUT"])
@bp.route("/predictions/<model>/<version>", methods=["POST", "PUT"])
def predict(model, version=None):
    svc = services()
    started = time.perf_counter()
    user = authenticate("predict", model, basic=True)
    authenticated = time.perf_counter() - started
    outcome = svc.pipeline.predict(PredictionRequest(
        request_id=g.request_id, trace_id=tracing.trace_id(), username=user.username,
        own_quota=user.predict_rate_limit, model=model, pinned=version, classes=False,
        read=lambda: read_body(request.environ["wsgi.input"], request.content_type,
                               request.content_length, svc.settings.max_upload_bytes)))
    if outcome.error:
        response = _error(outcome.error)
    else:
        # The handler's JSON as TorchServe sent it (the pipeline takes no other answer).
        response = Response(outcome.answers[0].answer.body, mimetype="application/json")
    return observability.report(response, {"auth": authenticated, **outcome.stages},
                                outcome.model_version, outcome.upstream_seconds)


# ---- management ---------------------------------------------------------------------------
def _management() -> TorchServeManagement:
    user = authenticate("models:admin", basic=True)
    return TorchServeManagement(services().models, user.uses, actor(user))


@bp.get("/models")
def list_models():
    return _management().list_models(request.args.get("limit"), request.args.get("next_page_token"))


@bp.post("/models")
def register():
    management = _management()
    body = request.get_json(silent=True) if request.is_json else None
    params = body if isinstance(body, dict) else request.args.to_dict()
    return management.register(Registration.parse(params))


@bp.get("/models/<name>")
@bp.get("/models/<name>/<version>")
def describe(name, version=None):
    return jsonify(_management().describe(name, version))


@bp.put("/models/<name>/<version>/set-default")
def set_default(name, version):
    return _management().set_default(name, version)


@bp.put("/models/<name>")
@bp.put("/models/<name>/<version>")
def scale(name, version=None):
    return _management().scale(name, version, request.args.to_dict())


@bp.delete("/models/<name>")
@bp.delete("/models/<name>/<version>")
def unregister(name, version=None):
    return _management().unregister(name, version)
