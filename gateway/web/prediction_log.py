"""The prediction log's routes: a caller's own rows (GET /predictions), usage reports
(GET /usage), the admins' export (GET /predictions/export) and erasure
(DELETE /users/{username}/predictions)."""

import itertools
import re
from datetime import datetime, timedelta, timezone

from flask import Blueprint, Response, request

from core.errors import ApiError
from gateway import metrics
from gateway.prediction_log import export as log_export
from gateway.prediction_log.store import PredictionLog
from gateway.prediction_log.usage import GROUPS, usage
from gateway.web.auth import authenticate
from gateway.web.extension import services

MAX_LIMIT = 100
USAGE_DEFAULT_DAYS = 30
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # the export's default start
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
bp = Blueprint("prediction_log", __name__)


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(422, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _time_arg(name: str, default: datetime) -> datetime:
    """An RFC 3339 date (midnight UTC) or date-time with its offset, in UTC."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (DATE.fullmatch(raw) or DATE_TIME.fullmatch(raw)):
        raise ApiError(422, f"{name} must be an RFC 3339 date or date-time, e.g. 2026-12-01 "
                            "or 2026-12-01T12:00:00Z")
    try:
        moment = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, f"{name} is not a date that exists") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # an offset past year 1 or 9999: the nearest moment there is
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def _choice_arg(name: str, choices: tuple[str, ...]) -> str:
    raw = request.args.get(name, choices[0])
    if raw not in choices:
        raise ApiError(422, f"{name} must be one of {', '.join(choices)}")
    return raw


def _log() -> PredictionLog:
    prediction_log = services().prediction_log
    if prediction_log is None:
        raise ApiError(404, "the prediction log is turned off (PREDICTION_LOG=false)")
    return prediction_log


@bp.get("/predictions")
def list_predictions():
    user = authenticate("predictions:read")
    prediction_log = _log()
    limit = _int_arg("limit", 20, 1, MAX_LIMIT)
    before = _int_arg("before", None, 1, 2**63 - 1)
    username = request.args.get("user", user.username)
    if username != user.username and not user.may("predictions:admin"):
        raise ApiError(403, "reading another user's predictions needs the "
                       "'predictions:admin' scope", error="insufficient_scope")
    rows = prediction_log.page(services().privacy.names_of(username), limit, before)
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    return {"items": rows, "next_before": rows[-1]["id"] if len(rows) == limit else None}


@bp.get("/usage")
def usage_report():
    """With predictions:admin, everyone's usage; else the caller's own."""
    user = authenticate("predictions:read")
    prediction_log = _log()
    end = _time_arg("to", datetime.now(timezone.utc))
    # From after to is an empty range, not an error (as for the export).
    start = _time_arg("from", end - timedelta(days=USAGE_DEFAULT_DAYS) if end > EPOCH
                      else EPOCH)
    group_by = _choice_arg("group_by", GROUPS)
    names = None if user.may("predictions:admin") else services().privacy.names_of(user.username)
    groups = usage(prediction_log.engine, start, end, group_by, names)
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by,
            "groups": [group.describe() for group in groups]}


@bp.get("/predictions/export")
def export_predictions():
    authenticate("predictions:admin")
    prediction_log = _log()
    end = _time_arg("to", datetime.now(timezone.utc))
    start = _time_arg("from", EPOCH)
    after = _int_arg("after", 0, 0, 2**63 - 1)
    media_type, encode = log_export.FORMATS[_choice_arg("format", tuple(log_export.FORMATS))]
    records = log_export.rows(prediction_log.engine, start, end, after)
    first = list(itertools.islice(records, 1))  # read now: a database outage is still a 503
    return Response(encode(itertools.chain(first, records)), mimetype=media_type,
                    headers={"Cache-Control": "no-store"})


@bp.delete("/users/<username>/predictions")
def erase_user(username: str):
    """Erasure: the user's rows deleted and their tokens ended."""
    admin = authenticate("predictions:admin")
    _log()
    erasure = services().erasures.erase(username, admin.username)
    services().snapshot.refresh()
    metrics.TOKEN_REVOCATIONS.labels("erasure").inc()
    return erasure.describe()
