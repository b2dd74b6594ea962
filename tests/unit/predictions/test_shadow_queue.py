"""The shadow queue is bounded: a full queue drops (and counts) a copy, never waits."""

import threading

from devstack.waiting import wait_for
from gateway import metrics
from gateway.predictions.shadow import ShadowQueue


def dropped() -> float:
    return metrics.SHADOW_DROPPED._value.get()


def test_full_queue_drops_and_counts_without_waiting():
    queue, release, ran = ShadowQueue(workers=1, capacity=2), threading.Event(), []

    def job(n):
        release.wait(60)
        ran.append(n)

    before = dropped()
    assert queue.submit(job, 1) and queue.submit(job, 2)  # one running, one waiting
    # The jobs hold both slots until `release` is set, which happens only after this
    # submit returns: a submit that waited for a slot would never return.
    refused = []
    caller = threading.Thread(target=lambda: refused.append(queue.submit(job, 3)))
    caller.start()
    caller.join(60)
    assert refused == [False], "submit waited for a slot instead of dropping the copy"
    assert dropped() == before + 1
    release.set()
    wait_for(lambda: len(ran) == 2, timeout=60, what="both queued jobs ran")
    assert sorted(ran) == [1, 2]
    # The done callbacks free the slots just after the jobs end.
    assert wait_for(lambda: queue.submit(job, 4), timeout=60, what="a slot freed")
