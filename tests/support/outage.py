"""A database outage under load, for any gateway (one of the tests, a Compose
stack): four callers, the database stopped for OUTAGE_S while /readyz is watched, then
started again; what the callers, /readyz and the prediction log saw."""

import threading
import time
from collections import Counter
from collections.abc import Callable

import requests

from devstack import images
from devstack.waiting import MODEL_READY_S, wait_for

OUTAGE_S = 15
CALL_TIMEOUT_S = 45  # above the gateway's upstream read timeout (35 s)


class Caller(threading.Thread):
    """A client that names each call (X-Request-ID) and keeps (id, status or the
    transport error's name, sent, answered) for every one; after a transport error it
    waits a little before the next call, as a client that retries would."""

    def __init__(self, url: str, token: str, tag: str):
        super().__init__(daemon=True)
        self.url, self.token, self.tag = url, token, tag
        self.stop_event, self.calls = threading.Event(), []

    def run(self):
        while not self.stop_event.is_set():
            request_id, sent = f"{self.tag}-{len(self.calls)}", time.monotonic()
            try:
                status = requests.post(self.url + "/predict", timeout=CALL_TIMEOUT_S,
                                       files={"file": ("a.jpg", images.jpeg())},
                                       headers={"Authorization": f"Bearer {self.token}",
                                                "X-Request-ID": request_id}).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
                time.sleep(0.2)
            self.calls.append((request_id, status, sent, time.monotonic()))

    def stop(self):
        self.stop_event.set()
        self.join(CALL_TIMEOUT_S + 10)


def outage_under_load(url: str, token: str, tag: str, stop_database: Callable[[], object],
                      start_database: Callable[[], object],
                      logged_ids: Callable[[str], list[str]],
                      meanwhile: Callable[[], object] = lambda: None) -> dict:
    """`logged_ids(tag)`: the request ids of the prediction log's rows that start with
    `tag`. `meanwhile()` runs at the start of the outage."""
    callers = [Caller(url, token, f"{tag}{i}") for i in range(4)]
    for caller in callers:
        caller.start()

    def calls() -> int:
        return sum(len(c.calls) for c in callers)

    ready = []
    try:
        wait_for(lambda: calls() >= 20, timeout=MODEL_READY_S, what="20 calls before the outage")
        stop_database()
        down_at = time.monotonic()
        meanwhile()
        while time.monotonic() - down_at < OUTAGE_S:
            try:
                answer = requests.get(url + "/readyz", timeout=10)
                body = answer.json()
                ready.append((answer.status_code, body.get("status"), body.get("degraded")))
            except requests.RequestException as exc:
                ready.append((type(exc).__name__, None, None))
            time.sleep(0.5)
        start_database()
        up_at = time.monotonic()
        count = calls()
        wait_for(lambda: calls() >= count + 20, timeout=MODEL_READY_S,
                 what="20 calls after the outage")
    finally:
        for caller in callers:
            caller.stop()
    every = [call for caller in callers for call in caller.calls]
    answered = {rid for rid, status, *_ in every if status == 200}

    def all_logged():
        ids = logged_ids(tag)
        return ids if answered <= set(ids) else None

    ids = wait_for(all_logged, timeout=MODEL_READY_S, what="a row for every 200")
    return {"calls": every, "during": [c for c in every if down_at <= c[2] and c[3] <= up_at],
            "ready": ready, "ids": ids, "answered": answered,
            "delivered_after_s": time.monotonic() - up_at}


def assert_served_through(seen: dict, what: str) -> None:
    """At least 99 % of the calls answered during the outage are 200; every 200 has one
    row, and no call two."""
    statuses = [status for _, status, *_ in seen["during"] if isinstance(status, int)]
    assert statuses and statuses.count(200) >= 0.99 * len(statuses), (what, Counter(statuses))
    assert len(seen["ids"]) == len(set(seen["ids"])), "a call has two rows"
    assert seen["answered"] <= set(seen["ids"]), "an answered call has no row"
    print(f"{what}: {len(seen['during'])} calls during the {OUTAGE_S} s outage, "
          f"{dict(Counter(status for _, status, *_ in seen['during']))}; {len(seen['calls'])} "
          f"in all, {len(seen['ids'])} rows, each 200 logged once, all there "
          f"{seen['delivered_after_s']:.1f} s after the restart; /readyz "
          f"{dict(Counter(s for s, *_ in seen['ready']))}")
