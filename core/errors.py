"""ApiError, the gateway's one error type, and helpers for the common ones.

Plain Python: the services, the TorchServe client, the image check and the CLIs raise
it without loading Flask. gateway.web.responses renders it, in the shape of the protocol
that was spoken.
"""


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
    """503: an outage, or load shedding; come back in `retry_after` seconds."""
    return ApiError(503, detail, {"Retry-After": str(retry_after)})


def rate_limit_storage_down() -> ApiError:
    """Fail closed: no unlimited logins, no unchecked revocations or quotas."""
    return unavailable("rate-limit storage is unavailable, try again")


def database_down() -> ApiError:
    return unavailable("the prediction log's database is unavailable, try again")


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"file is larger than {max_bytes} bytes")


def body_too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"request body is larger than {max_bytes} bytes")
