"""Whether this gateway can answer predictions (GET /readyz, /v2's health): TorchServe
answers, a live replica serves the version (as of the control snapshot), and the
prediction log takes rows, in the database or in the outbox under its bound. A gateway
without its database is ready, and says it is degraded."""

from core.errors import unavailable
from core.torchserve_client import TorchServeClient
from gateway.models.control_snapshot import ControlSnapshot
from gateway.prediction_log.writer import LogWriter


def readiness(torchserve: TorchServeClient, snapshot: ControlSnapshot,
              writer: LogWriter | None, model: str, version: str | None = None) -> dict:
    """The model's version served and what is degraded, or ApiError 503 with the reason
    (404 for a model or version not declared)."""
    torchserve.ping()
    status = writer.status if writer else None
    if status and status.refused:
        raise unavailable(f"not ready: the prediction log takes no rows: {status.refused}")
    # Fresh, while the database answers.
    served = snapshot.current(max_age=0).model(model).ready(version)
    degraded = []
    if status and (log := status.describe()):
        degraded.append(log)
    elif snapshot.database_error:
        degraded.append("database unavailable")
    if snapshot.database_error:
        degraded.append(f"control state from the snapshot of {snapshot.age_seconds():.0f} s ago")
    if not degraded:
        return {"status": "ready", **served}
    return {"status": "degraded", "degraded": "; ".join(degraded), **served}
