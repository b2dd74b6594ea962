"""GET /openapi.json and GET /docs (Swagger UI from local assets, works offline)."""

from pathlib import Path

import yaml
from flask import Blueprint
from flask_swagger_ui import get_swaggerui_blueprint

SPEC = yaml.safe_load((Path(__file__).with_name("openapi.yaml")).read_text(encoding="utf-8"))

bp = Blueprint("docs", __name__)
bp.register_blueprint(get_swaggerui_blueprint(
    "/docs", "/openapi.json",
    config={"app_name": "Image classifier gateway", "persistAuthorization": True},
))


@bp.get("/openapi.json")
def openapi_json():
    return SPEC
