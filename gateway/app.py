"""The gateway's app factory: create_app(settings) wires settings, services and blueprints."""

from dataclasses import dataclass

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import (admin, auth, docs, health, history, limits, metrics, observability, oip,
                     predict)
from gateway.audit import PredictionLog
from gateway.errors import register_error_handlers
from gateway.settings import Settings
from gateway.upstream import TorchServe
from gateway.users import UserStore


@dataclass
class Services:
    """What the blueprints share: app.extensions["gateway"]."""

    settings: Settings
    users: UserStore
    torchserve: TorchServe
    prediction_log: PredictionLog | None


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes + predict.MULTIPART_OVERHEAD)
    if settings.trusted_proxy_hops:
        # The client address from X-Forwarded-For, through that many trusted proxies
        # only; every other forwarded header is ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=0,
                                x_host=0, x_port=0, x_prefix=0)
    app.extensions["gateway"] = Services(
        settings, UserStore(settings.users_file), TorchServe.from_settings(settings),
        PredictionLog(settings.database_url) if settings.prediction_log else None)
    limits.init_app(app, settings.rate_limit_storage_uri)
    observability.init_app(app)
    register_error_handlers(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(predict.bp)
    app.register_blueprint(oip.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(docs.spec_bp)
    app.register_blueprint(docs.swagger_ui_blueprint())
    return app
