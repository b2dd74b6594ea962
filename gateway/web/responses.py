"""An ApiError as an HTTP answer, in each protocol's shape, each written once:
{"detail": ...} (with OAuth2's `error` and `error_description` where the error has a
code) everywhere, {"error": ...} for the Open Inference Protocol (/v2)."""

from flask import Response, jsonify

from core.errors import ApiError


def _json(body: dict, exc: ApiError) -> Response:
    response = jsonify(body)
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


def detail_error(exc: ApiError) -> Response:
    body = {"detail": exc.detail}
    if exc.error:
        body.update(error=exc.error, error_description=exc.detail)
    return _json(body, exc)


def oip_error(exc: ApiError) -> Response:
    return _json({"error": exc.detail}, exc)
