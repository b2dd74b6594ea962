"""Stop TorchServe under a running gateway, then bring it back: no gateway restart."""

import time

import pytest
import requests

from conftest import get_token, start_stack
from support import images

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory, model_store, users_file, jwt_secret):
    torchserve, gateway = start_stack(tmp_path_factory.mktemp("outage"), model_store,
                                      users_file, jwt_secret, upstream_connect_timeout=1)
    yield torchserve, gateway
    gateway.stop()
    torchserve.stop()


def predict(gateway, token):
    return requests.post(gateway.url + "/predict", headers={"Authorization": f"Bearer {token}"},
                         files={"file": ("a.png", images.png())}, timeout=30)


def test_outage_and_recovery(own_stack):
    torchserve, gateway = own_stack
    token = get_token(gateway)
    assert predict(gateway, token).status_code == 200
    assert requests.get(gateway.url + "/readyz", timeout=10).status_code == 200

    torchserve.stop()
    ready = requests.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and "unavailable" in ready.json()["detail"]
    started = time.monotonic()
    down = predict(gateway, token)
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    assert down.json() == {"detail": "model server is unavailable"}
    assert time.monotonic() - started < 5  # within the connect timeout, no hang
    assert requests.get(gateway.url + "/healthz", timeout=10).status_code == 200

    torchserve.start()
    torchserve.wait_ready()
    assert requests.get(gateway.url + "/readyz", timeout=10).status_code == 200
    assert predict(gateway, token).status_code == 200
