"""The Open Inference Protocol's (KServe v2) inference request and answer, as bytes in and
bytes out. Plain Python: gateway/web/oip.py is its HTTP adapter.

Tensor contract: input `image`, BYTES, shape [N] (1 <= N <= the handler's batch size),
one encoded image file per element; outputs `class_id` INT64 [N, k], `probability`
FP32 [N, k], `category_name` BYTES [N, k], k = parameter `top_k` (1 to the handler's
top-k, which is the default). JSON carries image bytes base64-encoded in `data`; the
binary tensor data extension (`Inference-Header-Content-Length`, tritonclient's
default) carries them raw after the JSON header.
"""

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import ApiError
from core.served_model import HandlerConfig
from gateway.predictions.pipeline import Classification
from gateway.predictions.uploads import Upload

HEADER_LENGTH = "Inference-Header-Content-Length"
# name -> (datatype, struct format of one element; None: length-prefixed bytes)
OUTPUTS = {"class_id": ("INT64", "q"), "probability": ("FP32", "f"),
           "category_name": ("BYTES", None)}


@dataclass(frozen=True)
class InferRequest:
    uploads: tuple[Upload, ...]
    outputs: tuple[tuple[str, bool], ...]  # (output name, binary?) in the order asked
    top_k: int
    id: str | None


@dataclass(frozen=True)
class Encoded:
    body: bytes
    mimetype: str
    headers: dict


def decode(raw: bytes, header_length: str | None, handler: HandlerConfig) -> InferRequest:
    """The request from its body and its Inference-Header-Content-Length, or ApiError 400."""
    body, tail = _split(raw, header_length)
    images = _images(body, tail, handler.batch_size)
    return InferRequest(tuple(Upload(f"image-{i}", image) for i, image in enumerate(images)),
                        _requested_outputs(body), _top_k(body, handler.top_k), body.get("id"))


def encode(model_name: str, request: InferRequest, request_id: str,
           answers: Sequence[Classification]) -> Encoded:
    """The answer: JSON, or JSON then the binary outputs asked for."""
    version = answers[0].model_version
    k = request.top_k
    # Each output is the same-named field of the handler's top-k predictions.
    columns = {out: [[p[out] for p in a.top_k[:k]] for a in answers] for out in OUTPUTS}
    answer = {"model_name": model_name, "model_version": version,
              "id": request.id if request.id is not None else request_id, "outputs": []}
    blobs = []
    for name, binary in request.outputs:
        out, blob = _serialise(name, columns[name], binary)
        answer["outputs"].append(out)
        blobs.append(blob)
    header = json.dumps(answer).encode()
    if not any(blobs):
        return Encoded(header, "application/json", {})
    return Encoded(header + b"".join(blobs), "application/octet-stream",
                   {HEADER_LENGTH: str(len(header))})


def _split(raw: bytes, length: str | None) -> tuple[dict, bytes]:
    """The JSON header and the binary tail (empty for plain JSON)."""
    if length is None:
        header, tail = raw, b""
    else:
        if not length.isdigit() or int(length) > len(raw):
            raise ApiError(400, f"{HEADER_LENGTH} must be an integer within the body")
        header, tail = raw[:int(length)], raw[int(length):]
    try:
        parsed = json.loads(header)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the inference request header is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "the inference request must be a JSON object")
    return parsed, tail


def _unpack_bytes(blob: bytes) -> list[bytes]:
    """BYTES elements in the binary extension: each a 4-byte little-endian length, then data."""
    items, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ApiError(400, "truncated BYTES element length")
        (size,) = struct.unpack_from("<I", blob, at)
        if at + 4 + size > len(blob):
            raise ApiError(400, "truncated BYTES element")
        items.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    return items


def _images(body: dict, tail: bytes, max_batch: int) -> list[bytes]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ApiError(400, "send exactly one input, named 'image'")
    tensor = inputs[0]
    if tensor.get("name") != "image":
        raise ApiError(400, f"unknown input {tensor.get('name')!r}: the input is 'image'")
    if tensor.get("datatype") != "BYTES":
        raise ApiError(400, "input 'image' must have datatype BYTES")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int)
            or not 1 <= shape[0] <= max_batch):
        raise ApiError(400, f"input 'image' must have shape [N], 1 <= N <= {max_batch}")
    binary_size = (tensor.get("parameters") or {}).get("binary_data_size")
    if binary_size is not None:
        if not isinstance(binary_size, int) or binary_size != len(tail):
            raise ApiError(400, "binary_data_size does not match the binary data sent")
        images = _unpack_bytes(tail)
    else:
        data = tensor.get("data")
        if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
            raise ApiError(400, "input 'image' data must be a list of base64 strings")
        try:
            images = [base64.b64decode(d, validate=True) for d in data]
        except (binascii.Error, ValueError):
            raise ApiError(400, "input 'image' data is not valid base64") from None
    if len(images) != shape[0]:
        raise ApiError(400, f"input 'image' has {len(images)} elements, shape says {shape[0]}")
    return images


def _requested_outputs(body: dict) -> tuple[tuple[str, bool], ...]:
    """(output name, binary?) pairs: all outputs, JSON, unless the request says otherwise."""
    default_binary = bool((body.get("parameters") or {}).get("binary_data_output", False))
    wanted = body.get("outputs")
    if wanted is None:
        return tuple((name, default_binary) for name in OUTPUTS)
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ApiError(400, "outputs must be a list of objects")
    chosen = {}
    for out in wanted:
        if out.get("name") not in OUTPUTS:
            raise ApiError(400, f"unknown output {out.get('name')!r}: "
                                f"one of {', '.join(OUTPUTS)}")
        chosen[out["name"]] = bool((out.get("parameters") or {}).get(
            "binary_data", default_binary))
    return tuple(chosen.items())


def _top_k(body: dict, most: int) -> int:
    k = (body.get("parameters") or {}).get("top_k", most)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= most:
        raise ApiError(400, f"parameter top_k must be an integer from 1 to {most}")
    return k


def _serialise(name: str, rows: list[list], binary: bool) -> tuple[dict, bytes]:
    kind, element = OUTPUTS[name]
    shape = [len(rows), len(rows[0])]
    flat = [value for row in rows for value in row]
    out = {"name": name, "datatype": kind, "shape": shape}
    if not binary:
        out["data"] = flat
        return out, b""
    if element is None:
        blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in flat)
    else:
        blob = struct.pack(f"<{len(flat)}{element}", *flat)
    out["parameters"] = {"binary_data_size": len(blob)}
    return out, blob
