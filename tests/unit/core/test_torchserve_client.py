"""The TorchServe client's addresses: the inference API through its own host's pool."""

import json

import urllib3

from core.settings import Settings
from core.torchserve_client import TorchServeClient


class Recorder:
    def __init__(self):
        self.calls = []

    def request(self, method, url, **kwargs):
        self.calls.append((method, url))
        body = {"predictions": []} if "predictions" in url else {"status": "Healthy"}
        return urllib3.HTTPResponse(body=json.dumps(body).encode(), status=200)


def test_predictions_and_ping_go_to_the_inference_hosts_pool_by_path():
    client = TorchServeClient(Settings(jwt_secret="k" * 40, torchserve_url="http://replicas:8080/ts/"))
    assert (client.inference.host, client.inference.port) == ("replicas", 8080)
    client.inference, client.pool = Recorder(), None
    client.predict(b"image", "2.0", "r-1", "other")
    client.ping()
    assert client.inference.calls == [("POST", "/ts/predictions/other/2.0"), ("GET", "/ts/ping")]
