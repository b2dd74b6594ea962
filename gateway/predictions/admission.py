"""Admission: at most MAX_INFLIGHT_PREDICTIONS predictions of this process in flight to
TorchServe (and, when MAX_INFLIGHT_PER_USER is set, at most that many of one user's, so
that one caller's flood is refused before it takes every slot), and for the ones
refused a 503 whose Retry-After follows the load.

TorchServe's queue would take every request and answer each later and later; past the
bound we say so at once. Retry-After is the number of refusals per completed prediction
over the last WINDOW_S seconds, rounded up (at least 1 s, at most RETRY_AFTER_MAX_S):
the more crowded, the longer honouring clients stay away, and each refusal they spare
is CPU left to the model (measured against a fixed 1 s: bench/HISTORY.md, "What each change did"). Until the
window holds as many completions as there are slots (a burst after a quiet spell) it
says 1 s.
"""

import contextlib
import math
import threading
import time
from collections import deque

from core.errors import ApiError
from core.settings import Settings
from gateway import metrics
from gateway.prediction_log.usage import SHED_DETAIL

WINDOW_S = 5.0
RETRY_AFTER_MAX_S = 10


class Shed(ApiError):
    """503: refused by admission, before the body was read."""


class Admission:
    def __init__(self, settings: Settings):
        self.limit = settings.max_inflight_predictions
        self.per_user = settings.max_inflight_per_user  # 0: no bound of its own
        self.wait = settings.inflight_wait_ms / 1000
        self._slots = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # username -> slots held, under _lock
        # Monotonic times of completions and refusals within the last WINDOW_S.
        self._completed: deque[float] = deque()
        self._refused: deque[float] = deque()

    @contextlib.contextmanager
    def slot(self, username: str):
        """One slot for a client's prediction, or ApiError 503: at once when `username`
        already holds MAX_INFLIGHT_PER_USER, else after INFLIGHT_WAIT_MS without a free
        slot. Taken before the body is read, so a refusal costs little; a /v2 call of
        several images takes one. Shadow copies take none: the shadow queue bounds them."""
        with self._lock:
            held = self._held.get(username, 0)
            over = 0 < self.per_user <= held
            if not over:
                self._held[username] = held + 1
        if over:
            self._refuse(f"{self.per_user} of this user's predictions")
        if not self._slots.acquire(timeout=self.wait):
            with self._lock:
                self._give_back(username)
            self._refuse(f"{self.limit} predictions")
        try:
            yield
        finally:
            self._slots.release()
            with self._lock:
                self._give_back(username)
                self._completed.append(time.monotonic())
                _trim(self._completed, self._completed[-1])

    def _give_back(self, username: str) -> None:
        """Under _lock: `username` holds one slot fewer."""
        held = self._held.pop(username) - 1
        if held:
            self._held[username] = held

    def _refuse(self, what: str) -> None:
        metrics.SHED.inc()
        retry_after = self._refusal()
        raise Shed(503, f"{SHED_DETAIL}: {what} in flight in this gateway process, try again "
                   f"in {retry_after} s", {"Retry-After": str(retry_after)})

    def _refusal(self) -> int:
        """Count a refusal; the Retry-After it gets."""
        with self._lock:
            now = time.monotonic()
            self._refused.append(now)
            _trim(self._refused, now)
            _trim(self._completed, now)
            if len(self._completed) < self.limit:  # too little to go on
                return 1
            ratio = len(self._refused) / len(self._completed)
        return min(RETRY_AFTER_MAX_S, max(1, math.ceil(ratio)))


def _trim(times: deque, now: float) -> None:
    """Drop the times older than the window."""
    while times and times[0] < now - WINDOW_S:
        times.popleft()
