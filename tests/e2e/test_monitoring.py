"""Monitoring with real parts: Debian's Prometheus scrapes a real gateway and model
replica, with the project's alert rules loaded. Every query of the Grafana dashboard
finds data, and "no READY worker" fires while the worker is killed and clears when it
is back."""

import json
import shutil
import signal
import threading

import psutil
import pytest
import requests

from devstack import images
from devstack.backends import Prometheus, required_or_skip
from devstack.servers import ROOT
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, get_token, start_stack
from devstack.waiting import MODEL_READY_S, wait_for

pytestmark = pytest.mark.e2e
DASHBOARD = ROOT / "config" / "grafana" / "image-classifier.json"
MODELS = "/models/classifier"
RATE_WINDOW = "30s"  # what the test's Prometheus (1 s scrapes) puts for $__rate_interval


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, model_store, users_file, jwt_keys):
    """(replica, gateway, prometheus) on a stack of the module's own."""
    required_or_skip(shutil.which("prometheus") is not None, "prometheus (Debian package)")
    tmp = tmp_path_factory.mktemp("monitored")
    replica, gateway = start_stack(tmp, model_store, users_file, jwt_keys)
    prometheus = Prometheus(tmp, {"gateway": [gateway.url.removeprefix("http://")],
                                  "torchserve": [replica.metrics_url.removeprefix("http://")]})
    try:
        prometheus.start()
        yield replica, gateway, prometheus
    finally:
        prometheus.stop()
        gateway.stop()
        replica.stop()


def predict(gateway, token: str) -> int:
    return requests.post(gateway.url + "/predict", headers={"Authorization": f"Bearer {token}"},
                         files={"file": ("x.jpg", images.jpeg(), "image/jpeg")},
                         timeout=120).status_code


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query on the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"].replace("$__rate_interval", RATE_WINDOW))
            for panel in panels for target in panel["targets"]]


def test_every_dashboard_query_finds_series(monitored):
    _, gateway, prometheus = monitored
    admin = {"Authorization": f"Bearer {get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)}"}
    registered = requests.post(gateway.url + MODELS + "/versions", headers=admin, timeout=200,
                               json={"archive": "classifier-2.0.mar"})
    assert registered.status_code == 201, registered.text
    canary = requests.put(gateway.url + MODELS + "/rollout", headers=admin, timeout=30,
                          json={"version": "2.0", "percent": 50, "mode": "canary"})
    assert canary.status_code == 200, canary.text
    token = get_token(gateway)
    refused = requests.post(gateway.url + "/token", timeout=30,
                            data={"username": ADMIN_USER, "password": "wrong"})
    assert refused.status_code == 401
    queries = dashboard_queries()
    assert len(queries) >= 8 and {"Batch sizes (batches/s by size)", "Worker health",
                                  "Rollout arms: requests"} <= {title for title, _ in queries}

    def empty() -> list[str]:
        """The queries without a series yet, after a few more predictions."""
        assert [predict(gateway, token) for _ in range(4)] == [200] * 4
        return [f"{title}: {expr}" for title, expr in queries if not prometheus.query(expr)]

    try:
        wait_for(lambda: not empty(), timeout=120, what="every dashboard query to find series",
                 log=lambda: "\n".join(empty()))
    finally:
        requests.delete(gateway.url + MODELS + "/rollout", headers=admin, timeout=30)


def worker_processes(replica) -> list[psutil.Process]:
    """TorchServe's live Python model workers under the replica."""
    workers = []
    for process in psutil.Process(replica.proc.pid).children(recursive=True):
        try:
            if "model_service_worker" in " ".join(process.cmdline()):
                workers.append(process)
        except psutil.Error:  # exited, or a killed worker not reaped yet (a zombie)
            pass
    return workers


def firing(prometheus, name: str) -> bool:
    return any(alert["state"] == "firing" for alert in prometheus.alerts(name))


def test_no_ready_worker_alert_fires_while_the_worker_is_killed_and_clears(monitored):
    replica, gateway, prometheus = monitored
    alert = "ModelDefaultVersionNotReady"
    assert prometheus.alerts(alert) == []
    stop = threading.Event()

    def kill_workers():
        """SIGKILL every model worker TorchServe starts, until told to stop."""
        while not stop.is_set():
            for worker in worker_processes(replica):
                try:
                    worker.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
            stop.wait(0.1)

    killer = threading.Thread(target=kill_workers, daemon=True)
    killer.start()
    try:
        # The rule waits 1 minute ("for: 1m") before it fires.
        wait_for(lambda: firing(prometheus, alert), timeout=MODEL_READY_S,
                 what=f"{alert} to fire", log=lambda: json.dumps(prometheus.alerts(alert)))
        labels = prometheus.alerts(alert)[0]["labels"]
        assert (labels["model"], labels["version"], labels["severity"]) == (
            "classifier", "1.0", "page")
    finally:
        stop.set()
        killer.join()
    # TorchServe restarts the worker after its back-off; the agent reports it READY.
    wait_for(lambda: prometheus.alerts(alert) == [], timeout=2 * MODEL_READY_S,
             what=f"{alert} to clear", log=replica.log_tail)
    token = get_token(gateway)
    wait_for(lambda: predict(gateway, token) == 200, timeout=MODEL_READY_S,
             what="a prediction after the worker is back")
