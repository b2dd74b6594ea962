"""Rollouts in the prediction-log database (table `rollouts`), so every gateway process
and replica routes by the same configuration, which predictions read from their
process's control snapshot (gateway.models.control_snapshot). Their figures come from the
prediction log itself: every row of a rollout carries its id and arm, so counts,
errors, latency and agreement are queries."""

import json
import logging
from dataclasses import asdict
from datetime import datetime, timezone

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.engine import Engine

from core.database.engine import as_utc
from core.database.tables import predictions, rollouts
from core.model_history import GUARD, Actor, append
from gateway.models.rollouts.guard import Guard, breach, candidate_failed, error_rate, percentile
from gateway.models.rollouts.state import Rollout

STATS_WINDOW = 1000  # newest rows per arm behind GET /models/{name}'s figures
# How a rollout's end reads in the model history (core.model_history), by its state.
ENDINGS = {"promoted": "rollout-promote", "aborted": "rollout-abort",
           "rolled_back": "rollout-rollback"}
logger = logging.getLogger(__name__)


def _from_row(row) -> Rollout:
    return Rollout(row.id, row.model_name, row.mode, row.version, row.percent, row.sticky,
                   Guard(**json.loads(row.guard)), row.state, row.reason,
                   as_utc(row.started_at), as_utc(row.ended_at))


class RolloutStore:
    """The rollout state of one model."""

    def __init__(self, engine: Engine, model_name: str):
        self.engine, self.model_name = engine, model_name

    def _select(self):
        return select(rollouts).where(rollouts.c.model_name == self.model_name)

    def active(self) -> Rollout | None:
        """The active rollout, as the database has it now."""
        with self.engine.connect() as connection:
            row = connection.execute(
                self._select().where(rollouts.c.state == "active")).first()
        return _from_row(row) if row else None

    def latest(self) -> Rollout | None:
        """The newest rollout, active or ended (uncached)."""
        with self.engine.connect() as connection:
            row = connection.execute(self._select().order_by(rollouts.c.id.desc())).first()
        return _from_row(row) if row else None

    def start(self, mode: str, version: str, percent: float, sticky: bool,
              guard: Guard, actor: Actor) -> Rollout:
        """Start a rollout, or change the share, stickiness and guard of the active one
        for the same version and mode (its figures carry on); any other active rollout
        ends as replaced."""
        now = datetime.now(timezone.utc)
        values = {"percent": percent, "sticky": sticky, "guard": json.dumps(asdict(guard))}
        with self.engine.begin() as connection:
            current = connection.execute(
                self._select().where(rollouts.c.state == "active")).first()
            if current is not None and (current.mode, current.version) == (mode, version):
                connection.execute(update(rollouts).where(rollouts.c.id == current.id)
                                   .values(**values))
                rollout_id, action, replaced = current.id, "rollout-change", ""
            else:
                replaced = ""
                if current is not None:
                    connection.execute(update(rollouts).where(rollouts.c.id == current.id)
                                       .values(state="replaced", ended_at=now,
                                               reason=f"replaced by a {mode} of {version}"))
                    replaced = f"; replaces the {current.mode} of {current.version}"
                rollout_id = connection.execute(insert(rollouts).values(
                    model_name=self.model_name, mode=mode, version=version, state="active",
                    started_at=now, **values)).inserted_primary_key[0]
                action = "rollout-start"
            row = connection.execute(select(rollouts).where(rollouts.c.id == rollout_id)).one()
            append(connection, self.model_name, action, actor, to_version=version,
                   reason=f"{mode} {percent:g}%{', sticky' if sticky else ''}, guard "
                          f"{json.dumps(asdict(guard))}, rollout {rollout_id}{replaced}")
        return _from_row(row)

    def end(self, rollout: Rollout, state: str, reason: str, actor: Actor) -> bool:
        """End an active rollout; False if another process already ended it."""
        with self.engine.begin() as connection:
            ended = connection.execute(
                update(rollouts).where(rollouts.c.id == rollout.id,
                                       rollouts.c.state == "active")
                .values(state=state, reason=reason, ended_at=datetime.now(timezone.utc)))
            if ended.rowcount == 1:
                append(connection, self.model_name, ENDINGS[state], actor,
                       to_version=rollout.version, reason=f"rollout {rollout.id}: {reason}")
        return ended.rowcount == 1

    def _arm_rows(self, connection, rollout_id: int, arm: str, limit: int) -> list:
        return connection.execute(
            select(predictions.c.status_code, predictions.c.latency_ms,
                   predictions.c.shadow_top1_agree, predictions.c.shadow_top5_overlap)
            .where(predictions.c.rollout_id == rollout_id, predictions.c.arm == arm)
            .order_by(predictions.c.id.desc()).limit(limit)).all()

    def review(self, rollout: Rollout) -> str | None:
        """The guard on the newest candidate rows; a breach rolls the rollout back (once,
        whichever process sees it first). The reason, when this call rolled it back."""
        guard = rollout.guard
        with self.engine.connect() as connection:
            window = self._arm_rows(connection, rollout.id, rollout.mode, guard.min_requests)
            baseline = self._arm_rows(connection, rollout.id, "default", guard.min_requests)
        reason = breach(guard, window, baseline)
        if not (reason and self.end(rollout, "rolled_back", reason, GUARD)):
            return None
        logger.warning({"event": "rollback", "model_name": rollout.model_name,
                        "version": rollout.version, "mode": rollout.mode,
                        "rollout_id": rollout.id, "reason": reason})
        return reason

    def stats(self, rollout: Rollout) -> dict:
        """Per arm: requests, candidate failures, latency percentiles (newest
        STATS_WINDOW rows), and for shadow the running agreement; for an ended rollout
        whose rows a purge may delete, the figures kept before it (freeze_ended)."""
        with self.engine.connect() as connection:
            frozen = connection.execute(
                select(rollouts.c.figures).where(rollouts.c.id == rollout.id)).scalar()
        return json.loads(frozen) if frozen else self.figures_from_rows(rollout)

    def figures_from_rows(self, rollout: Rollout) -> dict:
        arms = {}
        with self.engine.connect() as connection:
            counts = dict(connection.execute(
                select(predictions.c.arm, func.count())
                .where(predictions.c.rollout_id == rollout.id)
                .group_by(predictions.c.arm)).all())
            for arm in ("default", rollout.mode):
                rows = self._arm_rows(connection, rollout.id, arm, STATS_WINDOW)
                latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
                arms[arm] = {
                    "version": rollout.version if arm != "default" else None,
                    "share_percent": rollout.share(arm),
                    "requests": counts.get(arm, 0),
                    "failures": sum(candidate_failed(r.status_code) for r in rows),
                    "error_rate": error_rate(rows),
                    "p50_ms": percentile(latencies, 0.50),
                    "p95_ms": percentile(latencies, 0.95),
                    "p99_ms": percentile(latencies, 0.99),
                }
            if rollout.mode == "shadow":
                compared = connection.execute(
                    select(func.count(),
                           func.sum(case((predictions.c.shadow_top1_agree.is_(True), 1), else_=0)),
                           func.avg(predictions.c.shadow_top5_overlap))
                    .where(predictions.c.rollout_id == rollout.id, predictions.c.arm == "shadow",
                           predictions.c.shadow_top1_agree.is_not(None))).one()
                arms["shadow"].update(
                    compared=compared[0],
                    top1_agreement=(compared[1] or 0) / compared[0] if compared[0] else None,
                    mean_top5_overlap=float(compared[2]) if compared[2] is not None else None)
        return arms


def freeze_ended(engine: Engine, rows_before: datetime) -> int:
    """Keep the figures of every ended rollout that has none kept yet and rows older
    than `rows_before` (which a purge deletes); how many."""
    old_rows = select(predictions.c.id).where(predictions.c.rollout_id == rollouts.c.id,
                                              predictions.c.created_at < rows_before)
    with engine.connect() as connection:
        ended = connection.execute(
            select(rollouts).where(rollouts.c.state != "active", rollouts.c.figures.is_(None),
                                   old_rows.exists())).all()
    for row in ended:
        rollout = _from_row(row)
        figures = RolloutStore(engine, rollout.model_name).figures_from_rows(rollout)
        with engine.begin() as connection:
            connection.execute(update(rollouts).where(rollouts.c.id == rollout.id)
                               .values(figures=json.dumps(figures)))
    return len(ended)
