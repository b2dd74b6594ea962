"""Faults injected into real processes: a killed model worker, a killed gateway worker process,
PostgreSQL stopped under load (with the gateway killed and restarted meanwhile)."""

import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
from sqlalchemy import create_engine, text

from agent import readiness
from devstack import images
from devstack.backends import Postgres, Redis, postgres_available, required_or_skip
from devstack.stack import get_token, start_stack
from devstack.waiting import MODEL_READY_S, SERVER_START_S, wait_for
from tests.support.outage import assert_served_through, outage_under_load

pytestmark = pytest.mark.e2e
READ_TIMEOUT = 35  # the gateway's UPSTREAM_READ_TIMEOUT


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory, model_store, users_file, jwt_keys):
    """Two gateway worker processes on Redis and a PostgreSQL that the tests may stop."""
    required_or_skip(shutil.which("redis-server") is not None, "redis-server")
    required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
    redis, postgres = Redis().start(), Postgres().start()
    base = tmp_path_factory.mktemp("faults")
    try:
        torchserve, gateway = start_stack(base, model_store, users_file, jwt_keys,
                                          gateway_workers=2, rate_limit_storage_uri=redis.url,
                                          database_url=postgres.url)
    except BaseException:
        redis.stop()
        postgres.stop()
        raise
    yield torchserve, gateway, postgres
    gateway.stop()
    torchserve.stop()
    redis.stop()
    postgres.stop()


def worker_pid(torchserve) -> int | None:
    body = requests.get(f"{torchserve.management_url}/models/classifier", timeout=5).json()
    ready = readiness.ready_workers(body[0])
    return ready[0]["pid"] if ready else None


class Stream(threading.Thread):
    """A steady client: one prediction after another, every outcome and duration kept."""

    def __init__(self, gateway, token):
        super().__init__(daemon=True)
        self.gateway, self.token = gateway, token
        self.stop_event, self.results = threading.Event(), []

    def run(self):
        while not self.stop_event.is_set():
            started = time.monotonic()
            response = requests.post(self.gateway.url + "/predict", timeout=READ_TIMEOUT + 10,
                                     headers={"Authorization": f"Bearer {self.token}"},
                                     files={"file": ("a.jpg", images.jpeg())})
            self.results.append((response.status_code, time.monotonic() - started,
                                 response.headers.get("Retry-After"), time.monotonic()))

    def stop(self):
        self.stop_event.set()
        self.join(READ_TIMEOUT + 20)


def test_killed_model_worker_is_replaced_and_the_stream_recovers(fault_stack):
    torchserve, gateway, _ = fault_stack
    stream = Stream(gateway, get_token(gateway))
    stream.start()
    try:
        wait_for(lambda: stream.results, timeout=120, what="the stream's first answer")
        old_pid = worker_pid(torchserve)
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        readiness = []

        def replaced():
            """The new worker's pid once /readyz is 200 again; every /readyz status seen."""
            readiness.append(requests.get(gateway.url + "/readyz", timeout=10).status_code)
            new = worker_pid(torchserve)
            return new if readiness[-1] == 200 and new and new != old_pid else None

        new_pid = wait_for(replaced, timeout=MODEL_READY_S, what="a new READY model worker",
                           interval=0.05, log=torchserve.log_tail)
        recovered_after = time.monotonic() - killed_at
        settled = len(stream.results)
        wait_for(lambda: len(stream.results) >= settled + 10, timeout=MODEL_READY_S,
                 what="10 answers after the recovery")
    finally:
        stream.stop()
    assert new_pid and new_pid != old_pid, "TorchServe did not start a new worker"
    assert 503 in readiness and readiness[-1] == 200, readiness
    statuses = [s for s, *_ in stream.results]
    assert set(statuses) <= {200, 503}, statuses
    assert all(retry == "5" for s, _, retry, _ in stream.results if s == 503)
    assert max(d for _, d, _, _ in stream.results) < READ_TIMEOUT
    assert statuses[-10:] == [200] * 10
    print(f"model worker kill: {len(statuses)} requests, {statuses.count(503)} got 503, "
          f"worker back and /readyz 200 after {recovered_after:.1f}s")


def test_killed_gateway_worker_is_replaced_and_nothing_is_half_written(fault_stack):
    torchserve, gateway, postgres = fault_stack
    database_url = postgres.url
    token = get_token(gateway)
    master = psutil.Process(gateway.proc.pid)
    workers_before = {p.pid for p in master.children()}
    assert len(workers_before) == 2
    plan = [(f"gkill-{i}", images.jpeg() if i % 3 else b"not an image") for i in range(240)]
    outcomes = {}

    def send(item):
        request_id, data = item
        try:
            response = requests.post(gateway.url + "/predict", timeout=60, files={"file": ("a.jpg", data)},
                                     headers={"Authorization": f"Bearer {token}",
                                              "X-Request-ID": request_id})
            outcomes[request_id] = response.status_code
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # Cut by the kill: before the answer, or halfway through its body.
            outcomes[request_id] = "connection error"

    def killer():
        while len(outcomes) < 60:
            time.sleep(0.01)
        os.kill(sorted(workers_before)[0], signal.SIGKILL)

    threading.Thread(target=killer, daemon=True).start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, plan))

    def replaced():
        workers = {p.pid for p in master.children()}
        return workers if len(workers) == 2 and workers != workers_before else None

    wait_for(replaced, timeout=SERVER_START_S, what="granian replaced its killed worker",
             log=gateway.log_tail)

    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT * FROM predictions WHERE request_id LIKE 'gkill-%'")).mappings().all()
    engine.dispose()
    ids = [r["request_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a request left two rows"
    answered = {rid for rid, status in outcomes.items() if status != "connection error"}
    assert answered <= set(ids), "an answered request has no row"
    for row in rows:
        assert row["username"] and row["upload_sha256"] and row["created_at"]
        if row["success"]:
            assert row["status_code"] == 200 and row["class_id"] is not None
            assert row["category_name"] and row["model_version"] and row["score"] is not None
        else:
            assert row["status_code"] >= 400 and row["error_detail"]
    for rid in answered:
        expected = 200 if int(rid.split("-")[1]) % 3 else 415
        assert outcomes[rid] == expected, (rid, outcomes[rid])
    lost = len(plan) - len(answered)
    print(f"gateway worker kill: {len(plan)} requests, {len(answered)} answered, "
          f"{lost} cut by the kill, {len(rows)} rows, all complete")


def logged_ids(database_url: str, tag: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(
                "SELECT request_id FROM predictions WHERE request_id LIKE :tag"),
                {"tag": f"{tag}%"}).scalars())
    finally:
        engine.dispose()


def outage(fault_stack, tag: str, meanwhile=lambda: None) -> dict:
    _, gateway, postgres = fault_stack
    return outage_under_load(gateway.url, get_token(gateway), tag, postgres.stop_server,
                             postgres.start_server, lambda t: logged_ids(postgres.url, t),
                             meanwhile)


def test_predictions_flow_through_a_database_outage_and_every_row_arrives_once(fault_stack):
    seen = outage(fault_stack, "pg-outage-")
    assert_served_through(seen, "database outage")
    assert {status for status, *_ in seen["ready"]} == {200}, seen["ready"]
    degraded = [text for _, state, text in seen["ready"] if state == "degraded"]
    assert degraded and "database unavailable" in degraded[-1], seen["ready"]


def test_a_gateway_killed_during_the_outage_restarts_from_its_snapshot_and_loses_no_row(
        fault_stack):
    _, gateway, _ = fault_stack
    restarted = []

    def kill_and_restart():
        time.sleep(3)
        os.killpg(gateway.proc.pid, signal.SIGKILL)
        gateway.proc.wait(30)
        killed = time.monotonic()
        gateway.start()
        gateway.wait_up()
        restarted.append((killed, time.monotonic()))

    seen = outage(fault_stack, "pg-kill-", kill_and_restart)
    assert_served_through(seen, "database outage, gateway killed")
    [(killed, back)] = restarted
    # Calls fail to connect only while no gateway listens.
    failed = [c for c in seen["calls"] if not isinstance(c[1], int)]
    assert all(c[2] <= back for c in failed), failed
    assert {status for status, *_ in seen["ready"]} <= {200, "ConnectionError"}
    print(f"gateway down {back - killed:.1f} s; {len(failed)} calls found none listening")
