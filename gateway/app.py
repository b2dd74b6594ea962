"""The gateway's app factory: create_app(settings) wires settings, services and blueprints."""

from dataclasses import dataclass

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from gateway import admin, auth, docs, health, history, metrics, observability, predict
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
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + predict.MULTIPART_OVERHEAD,
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage_uri,
        RATELIMIT_HEADERS_ENABLED=True,
    )
    app.extensions["gateway"] = Services(
        settings, UserStore(settings.users_file), TorchServe.from_settings(settings),
        PredictionLog(settings.database_url) if settings.prediction_log else None)
    limiter = Limiter(get_remote_address, app=app)
    observability.init_app(app)
    register_error_handlers(app)
    app.register_blueprint(auth.create_blueprint(limiter))
    app.register_blueprint(predict.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(docs.spec_bp)
    app.register_blueprint(docs.swagger_ui_blueprint())
    return app
