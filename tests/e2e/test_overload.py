"""Over capacity the gateway answers at once with 503 + Retry-After, counts and logs
every shed request, and keeps serving what it accepted (a real TorchServe + granian)."""

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import create_engine, text

from devstack import images
from devstack.stack import get_token, start_stack
from devstack.waiting import wait_for
from gateway.predictions.admission import RETRY_AFTER_MAX_S, WINDOW_S

pytestmark = pytest.mark.e2e
CLIENTS = 24


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory, model_store, users_file, jwt_keys):
    base = tmp_path_factory.mktemp("overload")
    torchserve, gateway = start_stack(base, model_store, users_file, jwt_keys,
                                      max_inflight_predictions=2, inflight_wait_ms=0)
    yield gateway, gateway.env["DATABASE_URL"]
    gateway.stop()
    torchserve.stop()


def crowd(gateway, token: str, tag: str) -> list[tuple[requests.Response, float]]:
    """CLIENTS predictions sent at the same moment: (answer, seconds) each."""
    photo, start = images.jpeg(), threading.Barrier(CLIENTS)

    def one(i):
        with requests.Session() as session:
            start.wait()
            sent = time.perf_counter()
            response = session.post(gateway.url + "/predict", timeout=60,
                                    headers={"Authorization": f"Bearer {token}",
                                             "X-Request-ID": f"{tag}-{i}"},
                                    files={"file": ("x.jpg", photo)})
            return response, time.perf_counter() - sent

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def test_requests_over_capacity_get_a_fast_503_and_are_accounted_for(small_gateway):
    gateway, database_url = small_gateway
    token = get_token(gateway)
    outcomes = crowd(gateway, token, "crowd")
    served = [seconds for r, seconds in outcomes if r.status_code == 200]
    shed = [(r, seconds) for r, seconds in outcomes if r.status_code == 503]
    assert len(served) + len(shed) == CLIENTS  # every request answered, 200 or 503
    assert served and shed, [r.status_code for r, _ in outcomes]
    for response, _ in shed:
        assert 1 <= int(response.headers["Retry-After"]) <= RETRY_AFTER_MAX_S
        assert response.json()["detail"] == (
            "over capacity: 2 predictions in flight in this gateway process, try again in "
            f"{response.headers['Retry-After']} s")
    engine = create_engine(database_url)

    def counts():
        with engine.connect() as connection:
            return dict(connection.execute(text(
                "SELECT status_code, count(*) FROM predictions WHERE request_id LIKE 'crowd-%' "
                "GROUP BY status_code")).all())

    # Each one logged, shed ones too (theirs written behind the answer, within a second).
    wait_for(lambda: counts() == {200: len(served), 503: len(shed)}, timeout=30,
             what="a row for every answer", log=lambda: str(counts()))
    with engine.connect() as connection:
        shed_rows = connection.execute(text(
            "SELECT latency_ms, upload_bytes, model_version FROM predictions "
            "WHERE request_id LIKE 'crowd-%' AND status_code = 503")).all()
    # A cheap no: refused before the upload was read, never queued at TorchServe.
    assert all(r.upload_bytes is None and r.model_version is None for r in shed_rows)
    client_ms = statistics.median(seconds * 1000 for _, seconds in shed)
    print(f"{len(served)} served (p50 {statistics.median(served) * 1000:.0f} ms), "
          f"{len(shed)} shed (gateway p50 {statistics.median(r.latency_ms for r in shed_rows)} "
          f"ms, client p50 {client_ms:.0f} ms)")
    scrape = requests.get(gateway.url + "/metrics", timeout=10).text
    assert f"gateway_shed_total {float(len(shed))}" in scrape


def test_retry_after_grows_with_the_crowd(small_gateway):
    """After a quiet spell a burst hears 1 s (nothing to estimate from); a crowd right
    after it, with many refusals per completion in the window, hears a longer wait."""
    gateway, _ = small_gateway
    token = get_token(gateway)
    time.sleep(WINDOW_S + 0.5)  # the other test's crowd leaves the window
    first = [int(r.headers["Retry-After"]) for r, _ in crowd(gateway, token, "first")
             if r.status_code == 503]
    second = [int(r.headers["Retry-After"]) for r, _ in crowd(gateway, token, "second")
              if r.status_code == 503]
    assert first and second
    assert min(first) == 1
    assert min(second) > 1 and max(second) <= RETRY_AFTER_MAX_S
