"""POST /predict: validate the upload, ask TorchServe, answer in the old contract."""

import re
from datetime import datetime, timezone

from flask import Blueprint, current_app, g, request

from gateway.auth import authenticate
from gateway.errors import ApiError
from gateway.imagecheck import check_upload

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
MAX_FILENAME_CHARS = 255


def safe_filename(raw: str | None) -> str:
    """The base name only, without control characters, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:MAX_FILENAME_CHARS]


def extension_of(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and stem else ""


bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict():
    user = authenticate()
    services = current_app.extensions["gateway"]
    settings = services.settings
    version = request.args.get("model_version")
    if version is not None and not VERSION_PATTERN.match(version):
        raise ApiError(422, "model_version must be 1-32 letters, digits, '.', '_' or '-'")
    files = request.files.getlist("file")
    if not files:
        raise ApiError(422, "multipart form field 'file' is required")
    if len(files) > 1:
        raise ApiError(422, "send exactly one 'file' field")
    upload = files[0]
    filename = safe_filename(upload.filename)
    data = upload.read(settings.max_upload_bytes + 1)
    check_upload(data, settings.max_upload_bytes, settings.max_image_pixels)
    result = services.torchserve.predict(data, version, g.request_id)
    g.model_version = result.get("model_version")
    top = result["predictions"][0]
    return {
        "username": user.username,
        "filename": filename,
        "extension": extension_of(filename),
        "date": datetime.now(timezone.utc).isoformat(),
        "class_id": top["class_id"],
        "category_name": top["category_name"],
        "score": round(top["probability"] * 100),
        "success": True,
        "model_name": result.get("model_name"),
        "model_version": result.get("model_version"),
        "top_k": result["predictions"],
    }
