"""The gateway's app factory: create_app(settings) wires settings, services, blueprints
and the error handlers that answer every failure as JSON with the right status."""

import logging

from flask import Flask, jsonify
from limits.errors import StorageError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import (auth, docs, health, limits, model_versions_routes, observability, oip,
                     predict, prediction_log_routes)
from gateway.admission import Admission
from gateway.errors import ApiError
from gateway.prediction_log import PredictionLog
from gateway.rollouts import Rollouts
from gateway.services import EXTENSION, Services
from gateway.settings import Settings
from gateway.shadow import ShadowQueue
from gateway.torchserve_client import TorchServeClient
from gateway.uploads import MULTIPART_OVERHEAD
from gateway.users import UserStore

BLUEPRINTS = (auth.bp, predict.bp, oip.bp, model_versions_routes.bp, prediction_log_routes.bp,
              health.bp, docs.bp)
logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    if settings.trusted_proxy_hops:
        # The client address from X-Forwarded-For, through that many trusted proxies
        # only; every other forwarded header is ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=0,
                                x_host=0, x_port=0, x_prefix=0)
    prediction_log = PredictionLog(settings.database_url) if settings.prediction_log else None
    app.extensions[EXTENSION] = Services(
        settings, UserStore(settings.users_file), TorchServeClient(settings), Admission(settings),
        prediction_log,
        Rollouts(prediction_log.engine, settings.model_name) if prediction_log else None,
        ShadowQueue(settings.shadow_workers, settings.shadow_queue_size))
    limits.init_app(app, settings.rate_limit_storage_uri)
    observability.init_app(app)
    _register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


def error_response(status: int, detail: str, headers: dict | None = None,
                   error: str | None = None):
    """{"detail": ...}, plus the OAuth2 `error` and `error_description` when given."""
    body = {"detail": detail}
    if error:
        body.update(error=error, error_description=detail)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.detail, exc.headers, exc.error)

    @app.errorhandler(RequestEntityTooLarge)
    def _body_too_large(exc: RequestEntityTooLarge):
        # Werkzeug parses only small bodies now (/token forms, admin JSON).
        limit = app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, f"request body is larger than {limit} bytes")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(exc.code or 500, exc.description or exc.name, headers)

    @app.errorhandler(StorageError)
    def _limits_storage_down(exc: StorageError):
        logger.error("rate-limit storage unavailable: %s", exc.storage_error)
        return error_response(503, "rate-limit storage is unavailable, try again",
                              {"Retry-After": "5"})

    @app.errorhandler(SQLAlchemyError)
    def _database_down(exc: SQLAlchemyError):
        logger.error("prediction-log database error: %s", exc)
        return error_response(503, "the prediction log's database is unavailable, try again",
                              {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error")
        return error_response(500, "internal server error")
