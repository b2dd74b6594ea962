"""POST /predict: validate the upload, ask TorchServe, answer in the old contract, log it."""

import contextlib
import hashlib
import logging
import time
from datetime import datetime, timezone

import multipart
from flask import Blueprint, current_app, g, request
from werkzeug.exceptions import HTTPException

from gateway import limits, metrics
from gateway.auth import authenticate
from gateway.errors import ApiError, too_large, unavailable
from gateway.imagecheck import check_upload
from gateway.models import check_version

MAX_FILENAME_CHARS = 255
# Multipart framing around the file, on top of MAX_UPLOAD_BYTES.
MULTIPART_OVERHEAD = 64 * 1024
logger = logging.getLogger(__name__)


def safe_filename(raw: str | None) -> str:
    """The base name only, without control characters, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:MAX_FILENAME_CHARS]


def extension_of(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and stem else ""


def _read_upload(max_bytes: int) -> tuple[str | None, bytes]:
    """The one multipart part named "file": (its filename, its bytes).

    Parsed with the `multipart` package rather than werkzeug's parser, which
    compiles a new regex for every request's random boundary (0.57 ms against
    0.02 ms per upload, bench/README.md).
    """
    limit = max_bytes + MULTIPART_OVERHEAD
    if (request.content_length or 0) > limit:
        raise too_large(max_bytes)
    mimetype, options = multipart.parse_options_header(request.content_type or "")
    parts = []
    if mimetype == "multipart/form-data":
        if not options.get("boundary"):
            raise ApiError(422, "multipart body has no boundary")
        parser = multipart.MultipartParser(
            request.environ["wsgi.input"], options["boundary"], request.content_length or -1,
            part_limit=16, headersize_limit=16 * 1024, memory_limit=limit, disk_limit=limit,
            spool_limit=limit)
        try:
            parts = [part for part in parser if part.name == "file"]
        except multipart.ParserLimitReached as exc:
            raise ApiError(413, f"multipart body is over a limit: {exc.args[0]}") from None
        except multipart.MultipartError as exc:
            reason = exc.args[0] if exc.args else exc
            raise ApiError(422, f"multipart body could not be parsed: {reason}") from None
    if not parts:
        raise ApiError(422, "multipart form field 'file' is required")
    if len(parts) > 1:
        raise ApiError(422, "send exactly one 'file' field")
    return parts[0].filename, parts[0].raw


def classify_image(services, data: bytes, filename: str, version: str | None,
                   request_id: str, record: dict) -> dict:
    """Check one image, ask TorchServe, fill the log row's outcome; TorchServe's result."""
    settings = services.settings
    record.update(filename=filename, extension=extension_of(filename),
                  upload_sha256=hashlib.sha256(data).hexdigest(), upload_bytes=len(data))
    metrics.UPLOAD_BYTES.observe(len(data))
    check_upload(data, settings.max_upload_bytes, settings.max_image_pixels)
    started = time.perf_counter()
    try:
        result = services.torchserve.predict(data, version, request_id)
    finally:
        record["upstream_seconds"] = time.perf_counter() - started
        metrics.UPSTREAM_LATENCY.observe(record["upstream_seconds"])
    top = result["predictions"][0]
    record.update(class_id=top["class_id"], category_name=top["category_name"],
                  score=round(top["probability"] * 100), model_version=result.get("model_version"))
    metrics.PREDICTIONS.labels(record["model_version"], str(top["class_id"])).inc()
    return result


def authorize_prediction():
    """The caller, within their prediction quota (OWASP API4), or ApiError 401/429."""
    user = authenticate()
    settings = current_app.extensions["gateway"].settings
    limits.check_quota(user.predict_rate_limit or settings.predict_rate_limit,
                       f"predict:{user.username}", "prediction")
    return user


@contextlib.contextmanager
def logged_prediction(services, request_id: str, version: str | None):
    """The prediction-log row of one image, written when the block ends, whatever the outcome.

    The row is written before the answer; if that fails the client must not think it
    was kept, so the answer becomes 503.
    """
    record = {"request_id": request_id, "created_at": datetime.now(timezone.utc),
              "model_version": (version or "")[:32] or None}
    started = time.perf_counter()
    try:
        yield record
        record.update(success=True, status_code=200)
    except ApiError as exc:
        record.update(success=False, status_code=exc.status, error_detail=exc.detail)
        raise
    except HTTPException as exc:
        record.update(success=False, status_code=exc.code, error_detail=exc.description)
        raise
    except Exception as exc:
        record.update(success=False, status_code=500, error_detail=f"internal error: {exc!r}")
        raise
    finally:
        record["latency_ms"] = round((time.perf_counter() - started) * 1000)
        if services.prediction_log is not None:
            try:
                services.prediction_log.record(record)
            except Exception as exc:
                logger.exception("prediction log write failed for %s", request_id)
                raise unavailable("prediction log is unavailable, try again") from exc


bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict():
    services = current_app.extensions["gateway"]
    version = request.args.get("model_version")
    with logged_prediction(services, g.request_id, version) as record:
        user = authorize_prediction()
        record["username"] = user.username
        if version is not None:
            check_version(version)
        raw_filename, data = _read_upload(services.settings.max_upload_bytes)
        filename = safe_filename(raw_filename)
        try:
            result = classify_image(services, data, filename, version, g.request_id, record)
        finally:
            g.upstream_seconds = record.get("upstream_seconds")
        g.model_version = record["model_version"]
        return {
            "username": user.username,
            "filename": filename,
            "extension": record["extension"],
            "date": record["created_at"].isoformat(),
            "class_id": record["class_id"],
            "category_name": record["category_name"],
            "score": record["score"],
            "success": True,
            "model_name": result.get("model_name"),
            "model_version": record["model_version"],
            "top_k": result["predictions"],
        }
