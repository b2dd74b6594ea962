"""Shadow copies run in a small pool behind a bounded queue: a copy never holds up an
answer, and when the pool is busy the copy is dropped and counted, not queued."""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from gateway import metrics

logger = logging.getLogger(__name__)


class ShadowQueue:
    def __init__(self, workers: int, capacity: int):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shadow")
        self._slots = threading.BoundedSemaphore(capacity)  # running + waiting copies

    def submit(self, job, *args) -> bool:
        """Run job(*args) in the background; False (and counted) when the queue is full."""
        if not self._slots.acquire(blocking=False):
            metrics.SHADOW_DROPPED.inc()
            return False
        future = self._pool.submit(job, *args)
        future.add_done_callback(self._done)
        return True

    def _done(self, future) -> None:
        self._slots.release()
        if future.exception() is not None:
            logger.error("shadow copy failed: %r", future.exception())
