"""GET /predictions: the caller's own prediction log, newest first; admins may pick a user."""

from flask import Blueprint, request

from gateway.auth import authenticate
from gateway.errors import ApiError
from gateway.services import services

MAX_LIMIT = 100
bp = Blueprint("prediction_log", __name__)


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(422, f"{name} must be an integer from {low} to {high}")
    return int(raw)


@bp.get("/predictions")
def list_predictions():
    user = authenticate()
    prediction_log = services().prediction_log
    if prediction_log is None:
        raise ApiError(404, "the prediction log is turned off (PREDICTION_LOG=false)")
    limit = _int_arg("limit", 20, 1, MAX_LIMIT)
    before = _int_arg("before", None, 1, 2**63 - 1)
    username = request.args.get("user", user.username)
    if username != user.username and user.role != "admin":
        raise ApiError(403, "only admins may read another user's predictions")
    rows = prediction_log.page(username, limit, before)
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    return {"items": rows, "next_before": rows[-1]["id"] if len(rows) == limit else None}
