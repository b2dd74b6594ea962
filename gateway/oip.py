"""The Open Inference Protocol (KServe v2) over our tokens: /v2/...

Tensor contract: input `image`, BYTES, shape [N] (1 <= N <= MAX_BATCH), one encoded
image file per element; outputs `class_id` INT64 [N, k], `probability` FP32 [N, k],
`category_name` BYTES [N, k], k = parameter `top_k` (1-5, default 5). Requests and
answers are JSON (image bytes base64-encoded in `data`) or use the binary tensor data
extension (`Inference-Header-Content-Length`), as tritonclient sends by default.
Every image is one /predict-like call to TorchServe (sent together, so TorchServe
batches them) and leaves its own prediction-log row. Errors are {"error": "..."}.
"""

import base64
import binascii
import json
import struct
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.auth import authenticate
from gateway.errors import ApiError
from gateway.health import readyz
from gateway.model_versions import check_version
from gateway.predict import (Classification, authorize_prediction, classify_image,
                             logged_prediction)
from gateway.readiness import ready_workers
from gateway.services import services
from gateway.uploads import Upload

MAX_BATCH = 8  # the handler's batch size (handler/model-config.yaml)
TOP_K = 5  # the handler answers its 5 best classes
HEADER_LENGTH = "Inference-Header-Content-Length"
# name -> (datatype, struct format of one element; None: length-prefixed bytes)
OUTPUTS = {"class_id": ("INT64", "q"), "probability": ("FP32", "f"),
           "category_name": ("BYTES", None)}

bp = Blueprint("oip", __name__, url_prefix="/v2")
_pool = ThreadPoolExecutor(max_workers=MAX_BATCH, thread_name_prefix="oip")


@bp.errorhandler(ApiError)
def _protocol_error(exc: ApiError):
    """The protocol's error shape, {"error": "..."}, with /predict's statuses and headers."""
    response = jsonify(error=exc.detail)
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


@bp.errorhandler(HTTPException)
def _protocol_http_error(exc: HTTPException):
    return _protocol_error(ApiError(exc.code or 500, exc.description or exc.name))


def _check_model(name: str, version: str | None) -> None:
    if name != services().settings.model_name:
        raise ApiError(404, f"unknown model {name!r}")
    if version is not None:
        check_version(version)


@bp.get("")
def server_metadata():
    return {"name": "image-classifier-gateway", "version": "1.0",
            "extensions": ["binary_tensor_data"]}


@bp.get("/health/live")
def live():
    return {"live": True}


@bp.get("/health/ready")
def ready():
    readyz()  # one readiness truth with /readyz: 503 unless the default version has a worker
    return {"ready": True}


def _model_metadata(name: str, version: str | None) -> dict:
    versions = [v["modelVersion"] for v in services().torchserve.describe("all")]
    if version is not None and version not in versions:
        raise ApiError(404, f"model {name} version {version} is not registered")
    return {"name": name, "versions": versions, "platform": "pytorch_torchserve",
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": out, "datatype": kind, "shape": [-1, -1]}
                        for out, (kind, _) in OUTPUTS.items()]}


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name, version=None):
    authenticate()
    _check_model(name, version)
    return _model_metadata(name, version)


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name, version=None):
    authenticate()
    _check_model(name, version)
    described = services().torchserve.describe(version or "")
    if not (described and ready_workers(described[0])):
        raise ApiError(503, f"model {name} {version or 'default'} has no READY worker",
                       {"Retry-After": "5"})
    return {"name": name, "ready": True}


# ---- infer -----------------------------------------------------------------------

def _split_body() -> tuple[dict, bytes]:
    """The JSON header and the binary tail (empty for plain JSON)."""
    raw = request.get_data(cache=False)
    length = request.headers.get(HEADER_LENGTH)
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


def _images(body: dict, tail: bytes) -> list[bytes]:
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
            or not 1 <= shape[0] <= MAX_BATCH):
        raise ApiError(400, f"input 'image' must have shape [N], 1 <= N <= {MAX_BATCH}")
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


def _requested_outputs(body: dict) -> dict[str, bool]:
    """Output name -> binary? (all outputs, JSON, unless the request says otherwise)."""
    default_binary = bool((body.get("parameters") or {}).get("binary_data_output", False))
    wanted = body.get("outputs")
    if wanted is None:
        return {name: default_binary for name in OUTPUTS}
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ApiError(400, "outputs must be a list of objects")
    chosen = {}
    for out in wanted:
        if out.get("name") not in OUTPUTS:
            raise ApiError(400, f"unknown output {out.get('name')!r}: "
                                f"one of {', '.join(OUTPUTS)}")
        chosen[out["name"]] = bool((out.get("parameters") or {}).get(
            "binary_data", default_binary))
    return chosen


def _top_k(body: dict) -> int:
    k = (body.get("parameters") or {}).get("top_k", TOP_K)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= TOP_K:
        raise ApiError(400, f"parameter top_k must be an integer from 1 to {TOP_K}")
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


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name, version=None):
    svc = services()
    user = authorize_prediction()
    _check_model(name, version)
    body, tail = _split_body()
    images, outputs, k = _images(body, tail), _requested_outputs(body), _top_k(body)
    base_id = g.request_id

    def one(index_image) -> Classification:  # in a pool thread: no Flask globals here
        index, image = index_image
        request_id = f"{base_id}-{index}"
        with logged_prediction(svc, request_id, version) as attempt, svc.admission.slot():
            attempt.username = user.username
            return classify_image(svc, attempt, Upload(f"image-{index}", image))

    results = list(_pool.map(one, enumerate(images)))
    g.model_version = results[0].model_version
    # Each output is the same-named field of the handler's top-k predictions.
    columns = {out: [[p[out] for p in r.top_k[:k]] for r in results] for out in OUTPUTS}
    answer = {"model_name": name, "model_version": g.model_version,
              "id": body.get("id", g.request_id), "outputs": []}
    blobs = []
    for out_name, binary in outputs.items():
        out, blob = _serialise(out_name, columns[out_name], binary)
        answer["outputs"].append(out)
        blobs.append(blob)
    header = json.dumps(answer).encode()
    if not any(blobs):
        return Response(header, mimetype="application/json")
    response = Response(header + b"".join(blobs), mimetype="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(header))
    return response
