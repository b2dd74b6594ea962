"""Retention: the prediction log keeps PREDICTION_LOG_RETENTION_DAYS of rows (0: all).

A purge deletes the older rows in short batches, oldest first (gateway.prediction_log.store's
delete). A rollout's rows go only once its figures are kept in its `rollouts` row
(ended rollouts' are kept first), so GET /models/{name} shows the same figures after
they went, and an active rollout, whose guard reads its rows, keeps them all.
`python -m gateway.cli.db purge` runs it, once or every N seconds (the Compose service and
`make run`; in Kubernetes a CronJob).
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine

from core.database.tables import predictions, rollouts
from gateway.models.rollouts.store import freeze_ended
from gateway.prediction_log.store import DELETE_BATCH, PredictionLog

BATCH_PAUSE_SECONDS = 0.05  # between delete batches: /predict's inserts go in between


@dataclass(frozen=True)
class Purge:
    cutoff: datetime | None  # None: retention is off, nothing was deleted
    rows_deleted: int
    rollouts_frozen: int
    seconds: float

    def describe(self) -> str:
        if self.cutoff is None:
            return "retention is off (PREDICTION_LOG_RETENTION_DAYS=0): nothing purged"
        return (f"purged {self.rows_deleted} rows older than {self.cutoff.isoformat()} in "
                f"{self.seconds:.1f} s ({self.rollouts_frozen} ended rollouts' figures kept)")


def purge(engine: Engine, retention_days: int, now: datetime | None = None,
          batch: int = DELETE_BATCH, pause: float = BATCH_PAUSE_SECONDS) -> Purge:
    """Delete the rows older than `retention_days` (0: none), but those of a rollout
    whose figures are not kept (an active one, or one that ended since they were)."""
    started = time.monotonic()
    if retention_days == 0:
        return Purge(None, 0, 0, 0.0)
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)
    frozen = freeze_ended(engine, cutoff)
    kept = select(rollouts.c.id).where(rollouts.c.figures.is_not(None))
    deleted = PredictionLog(engine).delete(
        (predictions.c.created_at < cutoff)
        & or_(predictions.c.rollout_id.is_(None), predictions.c.rollout_id.in_(kept)),
        batch, pause)
    return Purge(cutoff, deleted, frozen, time.monotonic() - started)
