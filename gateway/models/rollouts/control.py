"""What operators do to rollouts, for the admin routes and the CLI alike: the request
body's validation, then the store and the model's versions."""

from core.errors import ApiError
from core.model_history import Actor
from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.state import MODES, Rollout
from gateway.models.rollouts.store import RolloutStore
from gateway.models.versions import ModelVersions, check_version

FIELDS = {"version", "percent", "sticky", "mode", "guard"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_guard(raw, mode: str) -> Guard:
    """The guard from a request body's `guard` (null: the defaults), or ApiError 422."""
    if raw is None:
        return Guard()
    if not isinstance(raw, dict) or set(raw) - set(Guard.__dataclass_fields__):
        raise ApiError(422, "guard must be an object with min_requests, max_error_rate, "
                            "max_p95_ratio and/or min_agreement")
    guard = Guard(**raw)
    if not _is_int(guard.min_requests) or not 5 <= guard.min_requests <= 100_000:
        raise ApiError(422, "guard.min_requests must be an integer from 5 to 100000")
    for name, low, high in (("max_error_rate", 0, 1), ("max_p95_ratio", 0, 1000),
                            ("min_agreement", 0, 1)):
        value = getattr(guard, name)
        if value is None and name != "max_error_rate":
            continue
        if not _is_number(value) or not low <= value <= high:
            raise ApiError(422, f"guard.{name} must be a number from {low} to {high}")
    if mode == "canary" and guard.min_agreement is not None:
        raise ApiError(422, "guard.min_agreement applies to shadow mode only")
    return guard


def parse_rollout(body) -> tuple[str, str, float, bool, Guard]:
    """(mode, version, percent, sticky, guard) from a request body, or ApiError 422."""
    if not isinstance(body, dict):
        raise ApiError(422, 'send JSON {"mode": "canary", "version": "2.0", "percent": 10, ...}')
    unknown = set(body) - FIELDS
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
    return mode, version, float(percent), sticky, parse_guard(body.get("guard"), mode)


class RolloutControl:
    def __init__(self, store: RolloutStore, versions: ModelVersions):
        self.store, self.versions = store, versions

    def start(self, body, actor: Actor) -> dict:
        """Start a canary or shadow, or change the active one's share, stickiness and
        guard."""
        mode, version, percent, sticky, guard = parse_rollout(body)
        self.versions.require_served(version)
        if version == self.versions.default_version():
            raise ApiError(409, f"version {version} is already the default")
        return self.status(self.store.start(mode, version, percent, sticky, guard, actor))

    def _active(self) -> Rollout:
        rollout = self.store.active()
        if rollout is None:
            raise ApiError(409, f"model {self.versions.name} has no active rollout")
        return rollout

    def promote(self, actor: Actor) -> dict:
        rollout = self._active()
        self.versions.promote(rollout.version, actor)
        self.store.end(rollout, "promoted", f"{rollout.version} is the default now", actor)
        return self.status()

    def abort(self, actor: Actor) -> dict:
        rollout = self._active()
        self.store.end(rollout, "aborted", "ended by an operator", actor)
        return self.status()

    def status(self, rollout: Rollout | None = None) -> dict:
        """The newest rollout (active or how it ended) with its figures, or null."""
        rollout = rollout or self.store.latest()
        if rollout is None:
            return {"rollout": None}
        return {"rollout": {**rollout.describe(), "arms": self.store.stats(rollout)}}
