"""2,000 mixed requests at concurrency 32: no unexpected status, one log row each, flat memory."""

import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
from sqlalchemy import create_engine, text

from devstack import images
from devstack.stack import get_token

pytestmark = pytest.mark.e2e
REQUESTS, CONCURRENCY = 2000, 32
RSS_GROWTH_BOUND = 40 * 2**20  # bytes, second half of the run against the first


def gateway_rss(gateway) -> int:
    master = psutil.Process(gateway.proc.pid)
    return sum(p.memory_info().rss for p in [master, *master.children(recursive=True)])


def test_load_mixed_requests(gateway):
    token = get_token(gateway)
    kinds = [(images.jpeg(), 200), (images.png(), 200), (b"garbage bytes", 415),
             (images.truncated_jpeg(), 422), (b"", 422)]
    plan = [(f"load-{i}", *kinds[i % len(kinds)]) for i in range(REQUESTS)]
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENCY))

    def send(item):
        request_id, data, _ = item
        response = session.post(gateway.url + "/predict", timeout=60, files={"file": ("x.jpg", data)},
                                headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id})
        return response.status_code

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        first = list(pool.map(send, plan[: REQUESTS // 2]))
        rss_half = gateway_rss(gateway)
        second = list(pool.map(send, plan[REQUESTS // 2:]))
    elapsed = time.monotonic() - started
    rss_end = gateway_rss(gateway)
    statuses = first + second
    unexpected = [(p[0], s, p[2]) for p, s in zip(plan, statuses) if s != p[2]]
    assert unexpected == []

    engine = create_engine(gateway.env["DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT request_id, status_code FROM predictions WHERE request_id LIKE 'load-%'")).all()
    engine.dispose()
    assert sorted(r.request_id for r in rows) == sorted(p[0] for p in plan)
    expected = {p[0]: p[2] for p in plan}
    assert all(r.status_code == expected[r.request_id] for r in rows)
    growth = rss_end - rss_half
    print(f"load: {REQUESTS} requests at concurrency {CONCURRENCY} in {elapsed:.1f}s "
          f"({REQUESTS / elapsed:.0f} req/s), 0 unexpected, {len(rows)} rows, gateway RSS "
          f"{rss_half / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_BOUND
