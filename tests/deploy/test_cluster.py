"""The round trip through a real cluster's gateway: `make deploy-check` after `make deploy`."""

import os

import pytest
import requests

from tests.support.containers import round_trip, wait_ready

URL = os.environ.get("DEPLOY_URL", "").rstrip("/")


@pytest.mark.skipif(not URL, reason="DEPLOY_URL is not set: `make deploy-check` sets it "
                                    "to the gateway's NodePort URL on minikube")
def test_cluster_round_trip():
    wait_ready(URL)
    body = round_trip(URL)
    print(f"{URL}: class {body['class_id']} ({body['category_name']}), "
          f"model {body['model_name']} {body['model_version']}")
    assert requests.get(URL + "/healthz", timeout=10).json() == {"status": "ok"}
