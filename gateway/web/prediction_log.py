"""The prediction log's routes: a caller's own rows (GET /predictions), usage reports
(GET /usage), the admins' export (GET /predictions/export) and erasure
(DELETE /users/{username}/predictions)."""

from datetime import datetime, timedelta, timezone

from flask import Blueprint, request

from core.errors import ApiError
from gateway import metrics
from gateway.prediction_log import export as log_export
from gateway.prediction_log.store import PredictionLog
from gateway.prediction_log.usage import GROUPS, usage
from gateway.web.auth import authenticate
from gateway.web.extension import services
from gateway.web.query import MAX_LIMIT, choice_arg, export, int_arg, time_arg

USAGE_DEFAULT_DAYS = 30
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # the export's default start
bp = Blueprint("prediction_log", __name__)


def _log() -> PredictionLog:
    prediction_log = services().prediction_log
    if prediction_log is None:
        raise ApiError(404, "the prediction log is turned off (PREDICTION_LOG=false)")
    return prediction_log


@bp.get("/predictions")
def list_predictions():
    user = authenticate("predictions:read")
    prediction_log = _log()
    limit = int_arg("limit", 20, 1, MAX_LIMIT)
    before = int_arg("before", None, 1, 2**63 - 1)
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
    end = time_arg("to", datetime.now(timezone.utc))
    # From after to is an empty range, not an error (as for the export).
    start = time_arg("from", end - timedelta(days=USAGE_DEFAULT_DAYS) if end > EPOCH
                      else EPOCH)
    group_by = choice_arg("group_by", GROUPS)
    names = None if user.may("predictions:admin") else services().privacy.names_of(user.username)
    groups = usage(prediction_log.engine, start, end, group_by, names)
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by,
            "groups": [group.describe() for group in groups]}


@bp.get("/predictions/export")
def export_predictions():
    authenticate("predictions:admin")
    prediction_log = _log()
    end = time_arg("to", datetime.now(timezone.utc))
    start = time_arg("from", EPOCH)
    after = int_arg("after", 0, 0, 2**63 - 1)
    return export(log_export.rows(prediction_log.engine, start, end, after), log_export.COLUMNS)


@bp.delete("/users/<username>/predictions")
def erase_user(username: str):
    """Erasure: the user's rows deleted and their tokens ended."""
    admin = authenticate("predictions:admin")
    _log()
    erasure = services().erasures.erase(username, admin.username)
    services().snapshot.refresh()
    metrics.TOKEN_REVOCATIONS.labels("erasure").inc()
    return erasure.describe()
