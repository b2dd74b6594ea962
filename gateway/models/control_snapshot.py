"""What every prediction reads from the database, as one snapshot that a thread in each
gateway process refreshes every REFRESH_SECONDS: each model's declared versions and
default, which live replicas serve them, its active rollout, and the erasures that end
tokens.
While the database answers no process reads a state older than MAX_AGE_SECONDS (a
request that finds the refresher late reads it itself).

During an outage of the database the last snapshot serves, so predictions keep their
routing and their token checks. Each refresh that changes something is also written to
a file (GATEWAY_STATE_DIR), so that a gateway that starts while the database is down
serves from it; one that has none waits for the database.
"""

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from core.errors import ApiError, unavailable
from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.state import Rollout
from gateway.models.versions import Serving

logger = logging.getLogger(__name__)
MAX_AGE_SECONDS = 1.0
REFRESH_SECONDS = MAX_AGE_SECONDS / 2


@dataclass(frozen=True)
class ModelState:
    name: str
    default_version: str | None
    serving: Mapping[str, Serving]  # every declared version
    rollout: Rollout | None  # the active one

    def cannot_load(self, version: str) -> bool:
        """Declared, but every live replica failed to load it: routed to none."""
        serving = self.serving.get(version)
        return serving is not None and serving.cannot_load

    def require_version(self, version: str | None) -> None:
        if version is not None and version not in self.serving:
            raise ApiError(404, f"model {self.name} version {version} is not registered")

    def ready(self, version: str | None = None) -> dict:
        """The version (default: the default one) served by a live replica, or ApiError
        503 with the reason; 404 for a version not declared."""
        self.require_version(version)
        version = version or self.default_version
        if version is None:
            raise unavailable(f"model {self.name} has no declared default version")
        serving = self.serving[version]
        if not serving.replicas:
            raise unavailable(f"not ready: no live replica serves {self.name} {version}")
        return {"model_name": self.name, "model_version": version,
                "ready_workers": serving.ready_workers, "replicas": serving.replicas}


@dataclass(frozen=True)
class ControlState:
    read_at: float  # epoch seconds
    models: Mapping[str, ModelState]  # every model with a declared version, and MODEL_NAME
    erased: Mapping[str, float] = field(default_factory=dict)  # user -> epoch of erasure

    def tokens_valid_after(self, username: str) -> float:
        """Epoch seconds of the user's newest erasure that a live token may predate, or 0."""
        return self.erased.get(username, 0.0)

    def model(self, name: str) -> ModelState:
        """The model's state; ApiError 404 when nothing of it is declared."""
        state = self.models.get(name)
        if state is None:
            raise ApiError(404, f"model {name} is not registered")
        return state

    # ---- the file -----------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"read_at": self.read_at, "erased": self.erased, "models": {
            name: {**asdict(model), "rollout": model.rollout.describe() if model.rollout else None}
            for name, model in self.models.items()}})

    @classmethod
    def from_json(cls, text: str) -> "ControlState":
        values = json.loads(text)
        return cls(values["read_at"], {name: ModelState(
            name, model["default_version"],
            {v: Serving(**s) for v, s in model["serving"].items()}, _rollout(model["rollout"]))
            for name, model in values["models"].items()}, values["erased"])


def _rollout(described: dict | None) -> Rollout | None:
    if described is None:
        return None
    ended = described["ended_at"]
    return Rollout(**{**described, "guard": Guard(**described["guard"]),
                      "started_at": datetime.fromisoformat(described["started_at"]),
                      "ended_at": datetime.fromisoformat(ended) if ended else None})


class ControlSnapshot:
    def __init__(self, read: Callable[[], ControlState], path: str | Path):
        """`read()`: a new state from the database (SQLAlchemyError when it cannot)."""
        self.read, self.path = read, Path(path)
        self.database_error: str | None = None  # why the last refresh failed
        self._state: ControlState | None = None
        self._lock = threading.Lock()  # one late read at a time

    def current(self, max_age: float = MAX_AGE_SECONDS) -> ControlState:
        """The newest state, read now if it is older than `max_age` while the database
        answers (the refresher is late, or the caller wants it fresh); 503 while this
        process has none (the database has not answered since it started, and it found
        no saved snapshot)."""
        state = self._state
        if state is not None and self.database_error is None \
                and time.time() - state.read_at > max_age:
            with self._lock:
                if self._state is state:  # no other thread read it meanwhile
                    self.refresh()
                state = self._state
        if state is None:
            raise unavailable("waiting for the database: this gateway has no snapshot of "
                              "the declared model state yet")
        return state

    def age_seconds(self) -> float | None:
        return time.time() - self._state.read_at if self._state else None

    def refresh(self) -> bool:
        """Read the state now; False (the last one kept) when the database cannot say."""
        try:
            state = self.read()
        except SQLAlchemyError as exc:
            if self.database_error is None:
                logger.error("control state unreadable, serving the snapshot of %s s ago: %s",
                             f"{self.age_seconds():.0f}" if self._state else "never", exc)
            self.database_error = type(exc).__name__
            return False
        self.database_error = None
        previous, self._state = self._state, state
        if previous is None or replace(previous, read_at=state.read_at) != state:
            self._save(state)
        return True

    def _save(self, state: ControlState) -> None:
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(state.to_json())
            os.replace(partial, self.path)
        except OSError as exc:
            logger.error("control snapshot not saved to %s: %s", self.path, exc)

    def load(self) -> bool:
        """The state last saved to the file, if there is one."""
        try:
            self._state = ControlState.from_json(self.path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return False
        logger.warning("serving from the control snapshot saved %s s ago (%s)",
                       f"{self.age_seconds():.0f}", self.path)
        return True

    def start(self) -> None:
        """The first state (read, else the saved one), then the refresher, in the
        process that serves (a server's worker)."""
        if not self.refresh():
            self.load()
        threading.Thread(target=self._run, daemon=True, name="control-snapshot").start()

    def _run(self) -> None:
        while True:
            time.sleep(REFRESH_SECONDS)
            try:
                self.refresh()
            except Exception:
                logger.exception("control snapshot refresh failed")
