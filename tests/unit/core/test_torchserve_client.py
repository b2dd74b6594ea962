"""The TorchServe client: the inference API through its own host's pool, and which calls go twice."""

import json
from http.client import RemoteDisconnected

import pytest
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError

from core.errors import ApiError
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


class Dropping(Recorder):
    """Fails the first call with `error`, then answers."""

    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def request(self, method, url, **kwargs):
        if not self.calls:
            self.calls.append((method, url))
            raise self.error
        return super().request(method, url, **kwargs)


@pytest.mark.parametrize("error,resent", [
    (ProtocolError("Connection aborted", RemoteDisconnected("closed without response")), True),
    (NewConnectionError(None, "refused"), True),
    (ConnectTimeoutError("slow connect"), False),
    (ReadTimeoutError(None, "/predictions/classifier", "slow read"), False),
])
def test_a_prediction_dropped_before_any_answer_is_sent_once_more(error, resent):
    client = TorchServeClient(Settings(jwt_secret="k" * 40))
    client.inference = Dropping(error)
    if resent:
        assert client.predict(b"image", None, "r-1").result == {"predictions": []}
    else:
        with pytest.raises(ApiError):
            client.predict(b"image", None, "r-1")
    assert len(client.inference.calls) == (2 if resent else 1)


def test_management_calls_are_never_sent_twice():
    client = TorchServeClient(Settings(jwt_secret="k" * 40))
    client.pool = Dropping(ProtocolError("Connection aborted", ConnectionResetError()))
    with pytest.raises(ApiError) as refused:
        client.management("POST", "/models", params={"url": "classifier-2.0.mar"})
    assert refused.value.status == 503 and len(client.pool.calls) == 1
