"""One error shape for every failure: JSON {"detail": "..."} with the right status."""

import logging

from flask import Flask, jsonify
from limits.errors import StorageError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """`error` is an OAuth2 error code (RFC 6749 §5.2, RFC 6750 §3.1) where one applies;
    the body then carries it and `error_description` next to `detail`."""

    def __init__(self, status: int, detail: str, headers: dict | None = None,
                 error: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.error = error


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


def unauthorized(detail: str) -> ApiError:
    """No bearer token at all: RFC 6750 §3.1 says no error code then."""
    return ApiError(401, detail, {"WWW-Authenticate": "Bearer"})


def invalid_token(detail: str) -> ApiError:
    return ApiError(401, detail, {"WWW-Authenticate": (
        f'Bearer error="invalid_token", '
        f'error_description="{_quoted(detail)}"')}, error="invalid_token")


def unavailable(detail: str, retry_after: int = 5) -> ApiError:
    return ApiError(503, detail, {"Retry-After": str(retry_after)})


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"file is larger than {max_bytes} bytes")


def error_response(status: int, detail: str, headers: dict | None = None,
                   error: str | None = None):
    body = {"detail": detail}
    if error:
        body.update(error=error, error_description=detail)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.detail, exc.headers, exc.error)

    @app.errorhandler(RequestEntityTooLarge)
    def _body_too_large(exc: RequestEntityTooLarge):
        # Werkzeug parses only small bodies now (/token forms, admin JSON).
        limit = app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, f"request body is larger than {limit} bytes")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(exc.code or 500, exc.description or exc.name, headers)

    @app.errorhandler(StorageError)
    def _limits_storage_down(exc: StorageError):
        logger.error("rate-limit storage unavailable: %s", exc.storage_error)
        return error_response(503, "rate-limit storage is unavailable, try again",
                              {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error")
        return error_response(500, "internal server error")
