"""GET /openapi.json and GET /docs (Swagger UI from local assets, works offline)."""

from pathlib import Path

import yaml
from flask import Blueprint
from flask_swagger_ui import get_swaggerui_blueprint

SPEC = yaml.safe_load((Path(__file__).with_name("openapi.yaml")).read_text(encoding="utf-8"))

spec_bp = Blueprint("openapi", __name__)


@spec_bp.get("/openapi.json")
def openapi_json():
    return SPEC


def swagger_ui_blueprint():
    return get_swaggerui_blueprint(
        "/docs", "/openapi.json",
        config={"app_name": "Image classifier gateway", "persistAuthorization": True},
    )
