"""POST /predict: validate the upload, ask TorchServe, answer in the old contract, log it."""

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


def _classify(record: dict) -> dict:
    """The prediction answer; fills `record` with what the prediction log keeps."""
    user = authenticate()
    record["username"] = user.username
    services = current_app.extensions["gateway"]
    settings = services.settings
    # The per-user quota (OWASP API4), counted before any work for this request.
    limits.check_quota(user.predict_rate_limit or settings.predict_rate_limit,
                       f"predict:{user.username}", "prediction")
    version = request.args.get("model_version")
    if version is not None:
        check_version(version)
    raw_filename, data = _read_upload(settings.max_upload_bytes)
    filename = safe_filename(raw_filename)
    record.update(filename=filename, extension=extension_of(filename),
                  upload_sha256=hashlib.sha256(data).hexdigest(), upload_bytes=len(data))
    metrics.UPLOAD_BYTES.observe(len(data))
    check_upload(data, settings.max_upload_bytes, settings.max_image_pixels)
    started = time.perf_counter()
    try:
        result = services.torchserve.predict(data, version, g.request_id)
    finally:
        g.upstream_seconds = time.perf_counter() - started
        metrics.UPSTREAM_LATENCY.observe(g.upstream_seconds)
    top = result["predictions"][0]
    answer = {
        "username": user.username,
        "filename": filename,
        "extension": record["extension"],
        "date": record["created_at"].isoformat(),
        "class_id": top["class_id"],
        "category_name": top["category_name"],
        "score": round(top["probability"] * 100),
        "success": True,
        "model_name": result.get("model_name"),
        "model_version": result.get("model_version"),
        "top_k": result["predictions"],
    }
    g.model_version = answer["model_version"]
    metrics.PREDICTIONS.labels(answer["model_version"], str(answer["class_id"])).inc()
    record.update(class_id=answer["class_id"], category_name=answer["category_name"],
                  score=answer["score"], model_version=answer["model_version"])
    return answer


bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict():
    services = current_app.extensions["gateway"]
    record = {"request_id": g.request_id, "created_at": datetime.now(timezone.utc),
              "model_version": request.args.get("model_version", "")[:32] or None}
    started = time.perf_counter()
    try:
        answer = _classify(record)
        record.update(success=True, status_code=200)
        return answer
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
            _store(services.prediction_log, record)


def _store(prediction_log, record: dict) -> None:
    """Write the row before answering; if that fails the client must not think it was kept."""
    try:
        prediction_log.record(record)
    except Exception as exc:
        logger.exception("prediction log write failed for %s", record["request_id"])
        raise unavailable("prediction log is unavailable, try again") from exc
