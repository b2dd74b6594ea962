"""A rollout as every process reads it, and who falls in its candidate's share."""

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime

from gateway.models.rollouts.guard import Guard

MODES = ("canary", "shadow")


@dataclass(frozen=True)
class Rollout:
    id: int
    model_name: str
    mode: str  # canary: the candidate serves its share; shadow: its share is copied to it
    version: str  # the candidate
    percent: float
    sticky: bool
    guard: Guard
    state: str  # active, promoted, aborted, rolled_back, replaced
    reason: str | None
    started_at: datetime
    ended_at: datetime | None

    def in_candidate_share(self, subject: str, draw: float) -> bool:
        """Whether a request falls in the candidate's `percent` (canary: it serves the
        request; shadow: it gets a copy).

        Sticky: a hash of the rollout and the caller's subject decides, so a caller stays
        on one arm for the rollout's life; otherwise `draw` (uniform in [0, 1)) does.
        """
        if self.sticky:
            digest = hashlib.sha256(f"{self.id}:{subject}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
        return draw * 100 < self.percent

    def share(self, arm: str) -> float:
        """Percent of unpinned requests the arm serves (shadow: copies)."""
        if arm != "default":
            return self.percent
        return 100 - self.percent if self.mode == "canary" else 100.0

    def describe(self) -> dict:
        described = asdict(self)
        described["started_at"] = self.started_at.isoformat()
        described["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        return described
