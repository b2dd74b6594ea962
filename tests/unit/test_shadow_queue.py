"""The shadow queue is bounded: a full queue drops (and counts) a copy, never waits."""

import threading
import time

from gateway import metrics
from gateway.shadow import ShadowQueue


def dropped() -> float:
    return metrics.SHADOW_DROPPED._value.get()


def test_full_queue_drops_and_counts_without_waiting():
    queue, release, ran = ShadowQueue(workers=1, capacity=2), threading.Event(), []

    def job(n):
        release.wait(10)
        ran.append(n)

    before = dropped()
    assert queue.submit(job, 1) and queue.submit(job, 2)  # one running, one waiting
    started = time.perf_counter()
    assert not queue.submit(job, 3)
    assert time.perf_counter() - started < 0.05  # the caller never waits for a slot
    assert dropped() == before + 1
    release.set()
    deadline = time.monotonic() + 10
    while len(ran) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == [1, 2]
    time.sleep(0.05)  # the done callbacks free the slots
    assert queue.submit(job, 4)
