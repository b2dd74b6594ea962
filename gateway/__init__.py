"""Flask auth gateway in front of TorchServe. Entry point: create_app(settings)."""

import re
import uuid
from dataclasses import dataclass

from flask import Flask, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from gateway import admin, auth, docs, health, predict
from gateway.errors import register_error_handlers
from gateway.settings import Settings
from gateway.upstream import TorchServe
from gateway.users import UserStore

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Multipart framing around the file, on top of MAX_UPLOAD_BYTES.
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class Services:
    """What the blueprints share: app.extensions["gateway"]."""

    settings: Settings
    users: UserStore
    torchserve: TorchServe


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage_uri,
        RATELIMIT_HEADERS_ENABLED=True,
        JSON_SORT_KEYS=False,
    )
    app.extensions["gateway"] = Services(settings, UserStore(settings.users_file),
                                         TorchServe.from_settings(settings))
    limiter = Limiter(get_remote_address, app=app)

    @app.before_request
    def assign_request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def return_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    register_error_handlers(app)
    app.register_blueprint(auth.create_blueprint(limiter))
    app.register_blueprint(predict.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(docs.spec_bp)
    app.register_blueprint(docs.swagger_ui_blueprint())
    return app
