"""Metrics across gateway worker processes, JSON request logs, and the prediction log on
SQLite and PostgreSQL."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from sqlalchemy import create_engine, text

from devstack import images
from devstack.backends import Postgres, Redis, postgres_available, required_or_skip
from devstack.servers import GatewayServer
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, DEMO_USER, get_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def redis_server():
    required_or_skip(shutil.which("redis-server") is not None, "redis-server")
    server = Redis().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_worker_gateway(tmp_path_factory, torchserve, users_file, jwt_keys, redis_server):
    """Two gateway worker processes in front of the stack's replica, on its database (where the
    replica's agent reports, which /readyz reads)."""
    gateway = GatewayServer(torchserve, tmp_path_factory.mktemp("gw2"), jwt_keys_file=jwt_keys,
                            users_file=users_file, gateway_workers=2,
                            rate_limit_storage_uri=redis_server.url,
                            database_url=torchserve.env["DATABASE_URL"])
    gateway.start()
    gateway.wait_up()
    yield gateway
    gateway.stop()


def sample_value(metrics_text: str, name: str, labels: dict) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{wanted}}}")


def readyz_workers(metrics_dir) -> int:
    """How many worker sample files hold /readyz requests."""
    holding = 0
    for path in metrics_dir.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        holding += any(value > 0 and '"gateway_requests_total"' in key and '"/readyz"' in key
                       for key, value, *_ in values)
    return holding


def test_one_scrape_counts_every_worker(two_worker_gateway):
    gateway = two_worker_gateway
    labels = {"route": "/readyz", "method": "GET", "status": "200"}
    sent = 0
    # Requests until both workers have served some (the kernel may favour one at
    # first); each worker then holds its own samples.
    with ThreadPoolExecutor(16) as pool:
        while sent < 2000 and readyz_workers(gateway.metrics_dir) < 2:
            statuses = list(pool.map(
                lambda _: requests.get(gateway.url + "/readyz", timeout=10).status_code, range(48)))
            assert statuses == [200] * 48
            sent += 48
    assert readyz_workers(gateway.metrics_dir) == 2, "one worker served everything"
    scrape = requests.get(gateway.url + "/metrics", timeout=10).text
    assert sample_value(scrape, "gateway_requests_total", labels) == sent


def test_prediction_metrics_and_rate_limit_across_workers(two_worker_gateway):
    gateway = two_worker_gateway
    token = get_token(gateway)
    ok = requests.post(gateway.url + "/predict", headers={"Authorization": f"Bearer {token}"},
                       files={"file": ("a.jpg", images.jpeg())}, timeout=30)
    assert ok.status_code == 200
    # The login limit is shared by both workers through Redis: exactly 5 failures pass.
    answers = [requests.post(gateway.url + "/token", timeout=30,
                             data={"username": "eve", "password": f"guess-{i}"}).status_code
               for i in range(8)]
    assert answers == [401] * 5 + [429] * 3
    scrape = requests.get(gateway.url + "/metrics", timeout=10).text
    assert sample_value(scrape, "gateway_predictions_total",
                        {"model_version": "1.0", "class_id": ok.json()["class_id"]}) >= 1
    assert sample_value(scrape, "gateway_rate_limited_total", {"route": "/token"}) == 3
    assert sample_value(scrape, "gateway_auth_failures_total", {"reason": "bad_credentials"}) >= 5
    assert "gateway_upstream_duration_seconds_bucket" in scrape
    assert "gateway_upload_bytes_bucket" in scrape


def test_request_id_joins_gateway_and_torchserve_logs(gateway, torchserve, user_token):
    response = requests.post(gateway.url + "/predict", files={"file": ("a.png", images.png())},
                             headers={"Authorization": f"Bearer {user_token}",
                                      "X-Request-ID": "abc"}, timeout=30)
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "abc"
    lines = [json.loads(line) for line in gateway.log_path.read_text().splitlines()
             if line.startswith("{")]
    [entry] = [e for e in lines if e.get("request_id") == "abc"]
    assert entry["route"] == "/predict" and entry["status"] == 200
    assert entry["user"] == DEMO_USER and entry["model_version"] == "1.0"
    assert entry["latency_ms"] > 0 and entry["upstream_ms"] > 0
    model_log = (torchserve.run_dir / "logs" / "model_log.log").read_text()
    assert "'abc'" in model_log


# ---- prediction log ---------------------------------------------------------------

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def logged_gateway(request, tmp_path_factory, torchserve, users_file, jwt_keys):
    base = tmp_path_factory.mktemp(request.param)
    database = None
    if request.param == "postgresql":
        required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
        database = Postgres().start()
        url = database.url
    else:
        url = f"sqlite:///{base / 'predictions.db'}"
    gateway = GatewayServer(torchserve, base / "gateway", jwt_keys_file=jwt_keys,
                            users_file=users_file, database_url=url)
    gateway.start()
    try:
        gateway.wait_up()
        yield gateway, url
    finally:
        gateway.stop()
        if database:
            database.stop()


def test_burst_leaves_exactly_one_row_per_request(logged_gateway):
    gateway, url = logged_gateway
    user_token, admin_token = get_token(gateway), get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)
    kinds = [("good", images.jpeg(), 200), ("text", b"not an image", 415),
             ("truncated", images.truncated_jpeg(), 422), ("png", images.png(), 200)]
    plan = [(f"burst-{i}", *kinds[i % len(kinds)]) for i in range(200)]

    def send(item):
        request_id, kind, data, _ = item
        token = admin_token if request_id.endswith("7") else user_token
        return requests.post(gateway.url + "/predict", timeout=60,
                             headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
                             files={"file": (f"{kind}.jpg", data)}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, plan))
    assert statuses == [expected for *_, expected in plan]

    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT request_id, success, status_code, username, upload_sha256, class_id "
            "FROM predictions WHERE request_id LIKE 'burst-%'")).all()
    engine.dispose()
    assert sorted(r.request_id for r in rows) == sorted(p[0] for p in plan)
    by_id = {r.request_id: r for r in rows}
    for request_id, kind, data, expected in plan:
        row = by_id[request_id]
        assert row.status_code == expected and row.success == (expected == 200)
        assert row.username == (ADMIN_USER if request_id.endswith("7") else DEMO_USER)
        assert (row.class_id is not None) == (expected == 200)
        assert len(row.upload_sha256) == 64

    # Paging: each of the caller's rows once, newest first, none of anyone else's.
    seen, before = [], None
    while True:
        params = {"limit": 37, **({"before": before} if before else {})}
        page = requests.get(gateway.url + "/predictions", params=params, timeout=30,
                            headers={"Authorization": f"Bearer {user_token}"}).json()
        seen += page["items"]
        before = page["next_before"]
        if before is None:
            break
    ids = [item["id"] for item in seen]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids))
    assert {item["username"] for item in seen} == {DEMO_USER}
    assert all(item["created_at"].endswith("+00:00") for item in seen)
    mine = {r.request_id for r in rows if r.username == DEMO_USER}
    assert mine <= {item["request_id"] for item in seen}

    admin_view = requests.get(gateway.url + "/predictions", timeout=30,
                              params={"user": DEMO_USER, "limit": 100},
                              headers={"Authorization": f"Bearer {admin_token}"})
    assert admin_view.status_code == 200
    assert {i["username"] for i in admin_view.json()["items"]} == {DEMO_USER}
    peek = requests.get(gateway.url + "/predictions", params={"user": ADMIN_USER}, timeout=30,
                        headers={"Authorization": f"Bearer {user_token}"})
    assert peek.status_code == 403
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"limit": "²"}, {"before": -1},
                {"before": "1e3"}):
        response = requests.get(gateway.url + "/predictions", params=bad, timeout=30,
                                headers={"Authorization": f"Bearer {user_token}"})
        assert response.status_code == 422, bad
