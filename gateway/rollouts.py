"""Progressive delivery of a model version: a weighted canary or shadow copies, guarded.

A rollout sends a share of unpinned /predict traffic to a registered candidate
version (canary), or copies a share to it after the default has answered (shadow).
Its state lives in the prediction-log database (table `rollouts`), so every gunicorn
process and replica routes by the same configuration: each reads it at most
CACHE_SECONDS old. Its figures come from the prediction log itself: every row of a
rollout carries its id and arm, so counts, errors, latency and agreement are queries.

The guard reviews the last `min_requests` candidate rows after each candidate
request; on a breach the rollout ends as rolled_back, with the reason recorded,
a metric raised and a JSON event logged. Plain Python (no Flask): the admin routes
and the operator CLI share RolloutControl.
"""

import hashlib
import json
import logging
import random
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.engine import Engine

from gateway import metrics
from gateway.errors import ApiError
from gateway.model_versions import ModelVersions, check_version
from gateway.prediction_log import as_utc
from gateway.tables import predictions, rollouts

CACHE_SECONDS = 1.0
MODES = ("canary", "shadow")
STATS_WINDOW = 1000  # newest rows per arm behind GET /models/{name}'s figures
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Guard:
    min_requests: int = 50  # the window: the newest N candidate requests
    max_error_rate: float = 0.05
    max_p95_ratio: float | None = 2.0  # candidate p95 / default p95 over the same window
    min_agreement: float | None = None  # shadow only: smallest top-1 agreement

    @classmethod
    def from_json(cls, raw) -> "Guard":
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or set(raw) - set(cls.__dataclass_fields__):
            raise ApiError(422, "guard must be an object with min_requests, max_error_rate, "
                                "max_p95_ratio and/or min_agreement")
        guard = cls(**raw)
        if not _is_int(guard.min_requests) or not 5 <= guard.min_requests <= 100_000:
            raise ApiError(422, "guard.min_requests must be an integer from 5 to 100000")
        for name, low, high in (("max_error_rate", 0, 1), ("max_p95_ratio", 0, 1000),
                                ("min_agreement", 0, 1)):
            value = getattr(guard, name)
            if value is None and name != "max_error_rate":
                continue
            if not _is_number(value) or not low <= value <= high:
                raise ApiError(422, f"guard.{name} must be a number from {low} to {high}")
        return guard


@dataclass(frozen=True)
class Rollout:
    id: int
    model_name: str
    mode: str
    version: str
    percent: float
    sticky: bool
    guard: Guard
    state: str
    reason: str | None
    started_at: datetime
    ended_at: datetime | None

    def takes(self, username: str | None) -> bool:
        """Whether this request goes (canary) or is copied (shadow) to the candidate.

        Sticky: a hash of the rollout and the token's subject, so a user stays on one
        arm for the rollout's life; otherwise a fresh draw per request.
        """
        if self.sticky:
            digest = hashlib.sha256(f"{self.id}:{username}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
        else:
            draw = random.random()
        return draw * 100 < self.percent

    def describe(self) -> dict:
        described = asdict(self)
        described["started_at"] = self.started_at.isoformat()
        described["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        return described


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_row(row) -> Rollout:
    return Rollout(row.id, row.model_name, row.mode, row.version, row.percent, row.sticky,
                   Guard(**json.loads(row.guard)), row.state, row.reason,
                   as_utc(row.started_at), as_utc(row.ended_at))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Rollouts:
    """The rollout state of one model in the prediction-log database."""

    def __init__(self, engine: Engine, model_name: str):
        self.engine, self.model_name = engine, model_name
        self._cached: tuple[float, Rollout | None] = (float("-inf"), None)

    def _select(self):
        return select(rollouts).where(rollouts.c.model_name == self.model_name)

    def active(self) -> Rollout | None:
        """The active rollout, read at most CACHE_SECONDS ago."""
        read_at, rollout = self._cached
        if time.monotonic() - read_at < CACHE_SECONDS:
            return rollout
        with self.engine.connect() as connection:
            row = connection.execute(
                self._select().where(rollouts.c.state == "active")).first()
        rollout = _from_row(row) if row else None
        self._cached = (time.monotonic(), rollout)
        return rollout

    def latest(self) -> Rollout | None:
        """The newest rollout, active or ended (uncached)."""
        with self.engine.connect() as connection:
            row = connection.execute(self._select().order_by(rollouts.c.id.desc())).first()
        return _from_row(row) if row else None

    def start(self, mode: str, version: str, percent: float, sticky: bool,
              guard: Guard) -> Rollout:
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
                rollout_id = current.id
            else:
                if current is not None:
                    connection.execute(update(rollouts).where(rollouts.c.id == current.id)
                                       .values(state="replaced", ended_at=now,
                                               reason=f"replaced by a {mode} of {version}"))
                rollout_id = connection.execute(insert(rollouts).values(
                    model_name=self.model_name, mode=mode, version=version, state="active",
                    started_at=now, **values)).inserted_primary_key[0]
            row = connection.execute(select(rollouts).where(rollouts.c.id == rollout_id)).one()
        self._cached = (float("-inf"), None)
        return _from_row(row)

    def end(self, rollout_id: int, state: str, reason: str) -> bool:
        """End an active rollout; False if another process already ended it."""
        with self.engine.begin() as connection:
            ended = connection.execute(
                update(rollouts).where(rollouts.c.id == rollout_id,
                                       rollouts.c.state == "active")
                .values(state=state, reason=reason, ended_at=datetime.now(timezone.utc)))
        self._cached = (float("-inf"), None)
        return ended.rowcount == 1

    def _arm_rows(self, connection, rollout_id: int, arm: str, limit: int) -> list:
        return connection.execute(
            select(predictions.c.status_code, predictions.c.latency_ms,
                   predictions.c.shadow_top1_agree, predictions.c.shadow_top5_overlap)
            .where(predictions.c.rollout_id == rollout_id, predictions.c.arm == arm)
            .order_by(predictions.c.id.desc()).limit(limit)).all()

    def review(self, rollout: Rollout) -> str | None:
        """Check the guard on the newest candidate rows; roll back on a breach.
        The breach's reason, or None."""
        guard, candidate_arm = rollout.guard, rollout.mode
        with self.engine.connect() as connection:
            window = self._arm_rows(connection, rollout.id, candidate_arm, guard.min_requests)
            if len(window) < guard.min_requests:
                return None
            baseline = self._arm_rows(connection, rollout.id, "default", guard.min_requests)
        reason = _breach(guard, window, baseline)
        if reason and self.end(rollout.id, "rolled_back", reason):
            metrics.ROLLBACKS.labels(rollout.version, reason.split(" ", 1)[0]).inc()
            logger.warning({"event": "rollback", "model_name": rollout.model_name,
                            "version": rollout.version, "mode": rollout.mode,
                            "rollout_id": rollout.id, "reason": reason})
        return reason

    def stats(self, rollout: Rollout) -> dict:
        """Per arm: requests, candidate failures, latency percentiles (newest
        STATS_WINDOW rows), and for shadow the running agreement."""
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
                    "share_percent": _share(rollout, arm),
                    "requests": counts.get(arm, 0),
                    "failures": sum(candidate_failed(r.status_code) for r in rows),
                    "error_rate": _error_rate(rows),
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


def _share(rollout: Rollout, arm: str) -> float:
    """Percent of unpinned requests the arm serves (shadow: copies)."""
    if arm != "default":
        return rollout.percent
    return 100 - rollout.percent if rollout.mode == "canary" else 100.0


def candidate_failed(status: int) -> bool:
    """The candidate's failure, not the client's: a server error, or a candidate that is
    no longer registered."""
    return status >= 500 or status == 404


def _error_rate(rows) -> float | None:
    return sum(candidate_failed(r.status_code) for r in rows) / len(rows) if rows else None


def _breach(guard: Guard, window: list, baseline: list) -> str | None:
    """Why the candidate's window breaches the guard, or None."""
    error_rate = _error_rate(window)
    if error_rate > guard.max_error_rate:
        return (f"error_rate {error_rate:.3f} over the last {len(window)} candidate requests "
                f"is above {guard.max_error_rate}")
    if guard.max_p95_ratio is not None and len(baseline) >= 5:
        candidate = percentile(
            [r.latency_ms for r in window if not candidate_failed(r.status_code)], 0.95)
        default = percentile(
            [r.latency_ms for r in baseline if not candidate_failed(r.status_code)], 0.95)
        if candidate is not None and default and candidate / default > guard.max_p95_ratio:
            return (f"p95_ratio {candidate / default:.2f} (candidate p95 {candidate} ms, default "
                    f"{default} ms) is above {guard.max_p95_ratio}")
    if guard.min_agreement is not None:
        compared = [r.shadow_top1_agree for r in window if r.shadow_top1_agree is not None]
        if compared:
            agreement = statistics.fmean(compared)
            if agreement < guard.min_agreement:
                return (f"agreement {agreement:.3f} top-1 over the last {len(compared)} shadow "
                        f"copies is below {guard.min_agreement}")
    return None


class RolloutControl:
    """What operators do to rollouts, for the admin routes and the CLI alike."""

    def __init__(self, rollouts_: Rollouts, versions: ModelVersions):
        self.rollouts, self.versions = rollouts_, versions

    def start(self, body) -> dict:
        if not isinstance(body, dict):
            raise ApiError(422, 'send JSON {"version": "2.0", "percent": 10, ...}')
        unknown = set(body) - {"version", "percent", "sticky", "mode", "guard"}
        if unknown:
            raise ApiError(422, f"unknown field(s): {', '.join(sorted(unknown))}")
        version, percent = body.get("version"), body.get("percent")
        mode, sticky = body.get("mode", "canary"), body.get("sticky", False)
        if not isinstance(version, str):
            raise ApiError(422, "version is required (a registered model version)")
        check_version(version)
        if not _is_number(percent) or not 0 < percent <= 100:
            raise ApiError(422, "percent must be a number above 0 and at most 100")
        if mode not in MODES:
            raise ApiError(422, f"mode must be one of {', '.join(MODES)}")
        if not isinstance(sticky, bool):
            raise ApiError(422, "sticky must be true or false")
        guard = Guard.from_json(body.get("guard"))
        if mode == "canary" and guard.min_agreement is not None:
            raise ApiError(422, "guard.min_agreement applies to shadow mode only")
        registered = [v["modelVersion"] for v in self.versions.ts.describe("all")]
        if version not in registered:
            raise ApiError(404, f"model {self.versions.name} version {version} is not registered")
        if version == self.versions.default_version():
            raise ApiError(409, f"version {version} is already the default")
        return self.status(self.rollouts.start(mode, version, float(percent), sticky, guard))

    def _active(self) -> Rollout:
        rollout = self.rollouts.active()
        if rollout is None:
            raise ApiError(409, f"model {self.versions.name} has no active canary or shadow")
        return rollout

    def promote(self) -> dict:
        rollout = self._active()
        self.versions.promote(rollout.version)
        self.rollouts.end(rollout.id, "promoted", f"{rollout.version} is the default now")
        return self.status()

    def abort(self) -> dict:
        rollout = self._active()
        self.rollouts.end(rollout.id, "aborted", "ended by an operator")
        return self.status()

    def status(self, rollout: Rollout | None = None) -> dict:
        """The newest rollout (active or how it ended) with its figures, or null."""
        rollout = rollout or self.rollouts.latest()
        if rollout is None:
            return {"rollout": None}
        return {"rollout": {**rollout.describe(), "arms": self.rollouts.stats(rollout)}}
