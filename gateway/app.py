"""The gateway's app factory: create_app(settings) wires settings, extensions, services,
blueprints and the error handlers that answer every failure as JSON with the right
status."""

import logging

from flask import Flask
from limits.errors import StorageError
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from core.errors import ApiError, body_too_large, database_down, rate_limit_storage_down
from core.settings import Settings
from gateway.predictions.uploads import MULTIPART_OVERHEAD
from gateway.services import Services
from gateway.web import (auth, docs, health, models, observability, oip, predict, prediction_log,
                         ratelimits, torchserve)
from gateway.web.extension import EXTENSION
from gateway.web.responses import detail_error
from gateway.web.unread_body import DrainUnreadBody

BLUEPRINTS = (auth.bp, predict.bp, oip.bp, torchserve.bp, models.bp, prediction_log.bp, health.bp,
              docs.bp)
logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    # Process-wide, because Pillow keeps it so: its own decompression-bomb threshold
    # (about 89 MP) would answer before MAX_IMAGE_PIXELS, with its number, for any
    # limit above it. The gateway checks the pixel count from the header itself and
    # never decodes pixel data (gateway/predictions/imagecheck.py).
    Image.MAX_IMAGE_PIXELS = None
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    if settings.trusted_proxy_hops:
        # The client address from X-Forwarded-For, through that many trusted proxies
        # only; every other forwarded header is ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=0,
                                x_host=0, x_port=0, x_prefix=0)
    app.wsgi_app = DrainUnreadBody(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    ratelimits.init_app(app, settings.rate_limit_storage_uri)
    observability.init_app(app, settings)
    app.extensions[EXTENSION] = Services.build(settings, ratelimits.limiter.limiter)
    _register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return detail_error(exc)

    @app.errorhandler(RequestEntityTooLarge)
    def _body_too_large(exc: RequestEntityTooLarge):
        # Werkzeug parses only small bodies now (/token forms, admin JSON).
        return detail_error(body_too_large(app.config["MAX_CONTENT_LENGTH"]))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return detail_error(ApiError(exc.code or 500, exc.description or exc.name, headers))

    @app.errorhandler(StorageError)
    def _limits_storage_down(exc: StorageError):
        logger.error("rate-limit storage unavailable: %s", exc.storage_error)
        return detail_error(rate_limit_storage_down())

    @app.errorhandler(SQLAlchemyError)
    def _database_down(exc: SQLAlchemyError):
        logger.error("prediction-log database error: %s", exc)
        return detail_error(database_down())

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error")
        return detail_error(ApiError(500, "internal server error"))
