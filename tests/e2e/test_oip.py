"""The Open Inference Protocol at the gateway, driven by the unmodified standard clients
(tritonclient, the kserve SDK) against the real granian + TorchServe stack; our code
only passes the Authorization header."""

import asyncio
import base64

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from kserve import InferenceRESTClient, RESTConfig
from tritonclient.utils import InferenceServerException

from devstack import images

pytestmark = pytest.mark.e2e
BATCH = [images.jpeg((320, 240)), images.jpeg((200, 300)), images.png(), images.jpeg((64, 64))]


def predict_class(gateway, token, data) -> int:
    answer = requests.post(gateway.url + "/predict", files={"file": ("x", data)}, timeout=60,
                           headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["class_id"]


def test_tritonclient_health_metadata_ready_and_binary_infer(gateway, user_token):
    auth = {"Authorization": f"Bearer {user_token}"}
    client = triton.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_model_metadata("classifier", headers=auth)
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in metadata["outputs"]} == {"class_id", "probability",
                                                        "category_name"}
    assert "1.0" in metadata["versions"]
    assert client.is_model_ready("classifier", "1.0", headers=auth)
    assert not client.is_model_ready("classifier", "9.9", headers=auth)

    tensor = triton.InferInput("image", [len(BATCH)], "BYTES")
    tensor.set_data_from_numpy(np.array(BATCH, dtype=np.object_), binary_data=True)
    outputs = [triton.InferRequestedOutput(name, binary_data=True)
               for name in ("class_id", "probability", "category_name")]
    result = client.infer("classifier", [tensor], outputs=outputs, headers=auth)
    class_ids, probabilities = result.as_numpy("class_id"), result.as_numpy("probability")
    names = result.as_numpy("category_name")
    assert class_ids.shape == probabilities.shape == names.shape == (4, 5)
    assert class_ids.dtype == np.int64 and probabilities.dtype == np.float32
    assert (np.diff(probabilities, axis=1) <= 1e-6).all()  # best first
    assert [int(c) for c in class_ids[:, 0]] == [predict_class(gateway, user_token, image)
                                                 for image in BATCH]
    # The same request pinned to a version, answered in JSON (binary_data off).
    pinned = client.infer("classifier", [tensor], model_version="1.0", headers=auth,
                          outputs=[triton.InferRequestedOutput("class_id", binary_data=False)])
    assert (pinned.as_numpy("class_id") == class_ids).all()
    assert pinned.get_response()["model_version"] == "1.0"


def test_kserve_sdk_json_infer(gateway, user_token):
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    request = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                           "data": [base64.b64encode(BATCH[0]).decode()]}],
               "parameters": {"top_k": 3}}
    response = asyncio.run(client.infer(gateway.url, request, model_name="classifier",
                                        headers={"Authorization": f"Bearer {user_token}"}))
    outputs = {o.name: o for o in response.outputs}
    assert outputs["class_id"].shape == [1, 3]
    assert outputs["class_id"].data[0] == predict_class(gateway, user_token, BATCH[0])
    assert len(outputs["category_name"].data) == 3


def infer_raw(gateway, token, body, path="/v2/models/classifier/infer"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(gateway.url + path, json=body, headers=headers, timeout=60)


def image_input(datatype="BYTES", data=None):
    return {"inputs": [{"name": "image", "datatype": datatype, "shape": [1],
                        "data": data or [base64.b64encode(BATCH[0]).decode()]}]}


@pytest.mark.parametrize("path, body, token, status", [
    ("/v2/models/classifier/versions/9.9/infer", image_input(), True, 404),
    ("/v2/models/other/infer", image_input(), True, 404),
    ("/v2/models/classifier/infer", image_input("FP32", [1.0]), True, 400),
    ("/v2/models/classifier/infer", image_input(data=["not base64!"]), True, 400),
    ("/v2/models/classifier/infer", image_input(data=[base64.b64encode(b"text").decode()]), True, 415),
    ("/v2/models/classifier/infer", {"inputs": []}, True, 400),
    ("/v2/models/classifier/infer", image_input(), False, 401),
], ids=["unknown_version", "unknown_model", "bad_datatype", "bad_base64", "not_an_image",
        "no_inputs", "no_token"])
def test_errors_in_the_protocols_shape(gateway, user_token, path, body, token, status):
    answer = infer_raw(gateway, user_token if token else None, body, path)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and answer.json()["error"]


def test_tritonclient_sees_errors(gateway, user_token):
    client = triton.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([BATCH[0]], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException, match="not registered"):
        client.infer("classifier", [tensor], model_version="9.9",
                     headers={"Authorization": f"Bearer {user_token}"})
    with pytest.raises(InferenceServerException, match="Not authenticated"):
        client.infer("classifier", [tensor])


def test_every_image_of_an_infer_leaves_its_row(gateway, user_token):
    request_id = "oip-rows"
    answer = requests.post(gateway.url + "/v2/models/classifier/infer", timeout=60,
                           headers={"Authorization": f"Bearer {user_token}",
                                    "X-Request-ID": request_id},
                           json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3],
                                             "data": [base64.b64encode(b).decode()
                                                      for b in BATCH[:3]]}]})
    assert answer.status_code == 200, answer.text
    rows = requests.get(gateway.url + "/predictions?limit=20", timeout=30,
                        headers={"Authorization": f"Bearer {user_token}"}).json()["items"]
    ours = sorted(r["request_id"] for r in rows if r["request_id"].startswith(request_id))
    assert ours == [f"{request_id}-{i}" for i in range(3)]
    assert 'route="/v2/models/<name>/infer"' in requests.get(gateway.url + "/metrics",
                                                             timeout=30).text
