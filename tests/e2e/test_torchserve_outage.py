"""Stop TorchServe under a running gateway, then bring it back: no gateway restart."""

import pytest
import requests

from devstack import images
from devstack.stack import get_token

pytestmark = pytest.mark.e2e


def predict(gateway, token):
    return requests.post(gateway.url + "/predict", headers={"Authorization": f"Bearer {token}"},
                         files={"file": ("a.png", images.png())}, timeout=30)


def test_outage_and_recovery(private_stack):
    torchserve, gateway = private_stack
    token = get_token(gateway)
    assert predict(gateway, token).status_code == 200
    assert requests.get(gateway.url + "/readyz", timeout=10).status_code == 200

    torchserve.stop()
    ready = requests.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and "unavailable" in ready.json()["detail"]
    down = predict(gateway, token)
    # Refused at connect: 503 at once, not a 504 after the read timeout.
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    assert down.json() == {"detail": "model server is unavailable"}
    assert requests.get(gateway.url + "/healthz", timeout=10).status_code == 200

    torchserve.start()
    torchserve.wait_ready()
    assert requests.get(gateway.url + "/readyz", timeout=10).status_code == 200
    assert predict(gateway, token).status_code == 200
