"""The Open Inference Protocol's request and answer as bytes (gateway/predictions/oip_codec.py)."""

import base64
import json
import struct

import pytest

from core.errors import ApiError
from core.served_model import HandlerConfig
from core.torchserve_client import Answer
from gateway.predictions import oip_codec
from gateway.predictions.pipeline import Classification

HANDLER = HandlerConfig(batch_size=8, top_k=5, max_image_pixels=40_000_000)


def json_request(images: list[bytes], **extra) -> bytes:
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(images)],
              "data": [base64.b64encode(i).decode() for i in images]}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def binary_request(images: list[bytes], **extra) -> tuple[bytes, str]:
    blob = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES",
                                     "shape": [len(images)],
                                     "parameters": {"binary_data_size": len(blob)}}],
                         **extra}).encode()
    return header + blob, str(len(header))


def answer(version: str = "1.0") -> Classification:
    top = tuple({"class_id": c, "category_name": f"c{c}", "probability": p}
                for c, p in [(281, 0.5), (282, 0.2), (285, 0.1), (1, 0.1), (2, 0.05)])
    result = {"predictions": list(top), "model_name": "classifier", "model_version": version}
    return Classification.from_answer(Answer(result, json.dumps(result).encode(), {}),
                                      "classifier", version)


def test_json_and_binary_requests_carry_the_same_images():
    images = [b"first", b"second image"]
    from_json = oip_codec.decode(json_request(images), None, HANDLER)
    from_binary = oip_codec.decode(*binary_request(images), HANDLER)
    assert [u.data for u in from_json.uploads] == [u.data for u in from_binary.uploads] == images
    assert [u.filename for u in from_json.uploads] == ["image-0", "image-1"]
    assert from_json.top_k == HANDLER.top_k
    assert from_json.outputs == (("class_id", False), ("probability", False),
                                 ("category_name", False))


def test_outputs_and_top_k_as_asked():
    request = oip_codec.decode(json_request(
        [b"x"], parameters={"top_k": 2},
        outputs=[{"name": "category_name", "parameters": {"binary_data": True}},
                 {"name": "class_id"}]), None, HANDLER)
    assert request.top_k == 2 and request.outputs == (("category_name", True),
                                                      ("class_id", False))


def test_a_json_answer():
    request = oip_codec.decode(json_request([b"x", b"y"], id="call-1",
                                            parameters={"top_k": 2}), None, HANDLER)
    encoded = oip_codec.encode("classifier", request, "rid", [answer(), answer()])
    assert encoded.mimetype == "application/json" and encoded.headers == {}
    body = json.loads(encoded.body)
    assert (body["model_name"], body["model_version"], body["id"]) == ("classifier", "1.0",
                                                                      "call-1")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["class_id"] == {"name": "class_id", "datatype": "INT64", "shape": [2, 2],
                                   "data": [281, 282, 281, 282]}
    assert outputs["category_name"]["data"] == ["c281", "c282", "c281", "c282"]


def test_a_binary_answer_unpacks_to_the_same_values():
    request = oip_codec.decode(json_request([b"x"], parameters={"binary_data_output": True}),
                               None, HANDLER)
    encoded = oip_codec.encode("classifier", request, "rid", [answer()])
    length = int(encoded.headers[oip_codec.HEADER_LENGTH])
    header, tail = json.loads(encoded.body[:length]), encoded.body[length:]
    assert json.loads(encoded.body[:length])["id"] == "rid"
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    class_ids = struct.unpack("<5q", tail[:sizes[0]])
    probabilities = struct.unpack("<5f", tail[sizes[0]:sizes[0] + sizes[1]])
    assert class_ids == (281, 282, 285, 1, 2)
    assert probabilities[0] == pytest.approx(0.5)


@pytest.mark.parametrize("raw,length,detail", [
    (b"not json", None, "the inference request header is not valid JSON"),
    (b"[1]", None, "the inference request must be a JSON object"),
    (b"{}", "99", "Inference-Header-Content-Length must be an integer within the body"),
    (b'{"inputs": []}', None, "send exactly one input, named 'image'"),
    (b'{"inputs": [{"name": "x"}]}', None, "unknown input 'x': the input is 'image'"),
    (b'{"inputs": [{"name": "image", "datatype": "FP32"}]}', None,
     "input 'image' must have datatype BYTES"),
    (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [9]}]}', None,
     "input 'image' must have shape [N], 1 <= N <= 8"),
    (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["!"]}]}',
     None, "input 'image' data is not valid base64"),
    (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["eA=="]}]}',
     None, "input 'image' has 1 elements, shape says 2"),
    (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],'
     b' "parameters": {"top_k": 6}}', None, "parameter top_k must be an integer from 1 to 5"),
    (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],'
     b' "outputs": [{"name": "logits"}]}', None,
     "unknown output 'logits': one of class_id, probability, category_name"),
], ids=["not_json", "not_object", "length_past_body", "no_input", "wrong_input",
        "wrong_datatype", "over_batch", "bad_base64", "shape_mismatch", "top_k_over",
        "unknown_output"])
def test_bad_requests_are_400(raw, length, detail):
    with pytest.raises(ApiError) as caught:
        oip_codec.decode(raw, length, HANDLER)
    assert (caught.value.status, caught.value.detail) == (400, detail)


def test_truncated_binary_elements_are_400():
    raw, length = binary_request([b"abc"])
    with pytest.raises(ApiError, match="binary_data_size does not match"):
        oip_codec.decode(raw[:-1], length, HANDLER)
