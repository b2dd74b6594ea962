"""Usage figures counted in Python from prediction-log rows, to check GET /usage's SQL."""

from datetime import timezone

from core.database.engine import as_utc
from gateway.models.rollouts.guard import percentile
from gateway.prediction_log.usage import SHED_DETAIL


def _key(row, group_by: str):
    return {"day": as_utc(row.created_at).astimezone(timezone.utc).strftime("%Y-%m-%d"),
            "user": row.username, "model": row.model_name, "version": row.model_version}[group_by]


def direct_usage(rows, group_by: str, names=None) -> list[dict]:
    """GET /usage's groups for `rows` (already cut to the report's time range)."""
    answered = [r for r in rows if r.arm != "shadow" and not r.request_id.endswith("-canary")
                and (names is None or r.username in names)]
    groups = []
    for key in sorted({_key(r, group_by) for r in answered}, key=lambda k: (k is None, k)):
        mine = [r for r in answered if _key(r, group_by) == key]
        shed = sum(r.status_code == 503 and (r.error_detail or "").startswith(SHED_DETAIL)
                   for r in mine)
        latencies = [r.latency_ms for r in mine if r.latency_ms is not None]
        groups.append({
            "key": key, "requests": len(mine),
            "images": sum(r.upload_bytes is not None for r in mine),
            "successes": sum(r.status_code == 200 for r in mine),
            "errors": {
                "client": sum(400 <= r.status_code < 500 and r.status_code != 429 for r in mine),
                "rate_limited": sum(r.status_code == 429 for r in mine),
                "shed": shed,
                "server": sum(r.status_code >= 500 for r in mine) - shed},
            "latency_ms": {"p50": percentile(latencies, 0.50),
                           "p95": percentile(latencies, 0.95)}})
    return groups
