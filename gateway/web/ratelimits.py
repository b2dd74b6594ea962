"""Login rate limits and the token denylist, in one shared storage (Flask-Limiter).

RATE_LIMIT_STORAGE_URI picks it: memory:// for one process, redis:// when several
processes or replicas serve, so every limit, quota (gateway.predictions.quota, on the same
storage) and revoked token holds across all of them.
"""

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many

limiter = Limiter(get_remote_address)


def init_app(app: Flask, storage_uri: str) -> None:
    # wrap_exceptions: a storage outage raises limits' StorageError, which the app
    # answers with 503 (fail closed: no unlimited logins, no unchecked revocations).
    app.config.update(RATELIMIT_STORAGE_URI=storage_uri, RATELIMIT_HEADERS_ENABLED=True,
                      RATELIMIT_STORAGE_OPTIONS={"wrap_exceptions": True})
    limiter.init_app(app)


def login_user_key() -> str:
    """Per name and client: the username, or the service account's client id."""
    basic = request.authorization
    name = (request.form.get("username") or request.form.get("client_id")
            or (basic.username if basic is not None else "") or "")
    return f"login:{name}|{get_remote_address()}"


def login_address_key() -> str:
    return f"login-address:{get_remote_address()}"


def basic_login_allowed(client_id: str | None, limit: str) -> bool:
    """Whether a client may try HTTP Basic again (failures count against `limit`)."""
    return all(limiter.limiter.test(item, "basic-login", client_id or "", get_remote_address())
               for item in parse_many(limit))


def basic_login_failed(client_id: str | None, limit: str) -> None:
    for item in parse_many(limit):
        limiter.limiter.hit(item, "basic-login", client_id or "", get_remote_address())


def deny(jti: str, seconds: float) -> None:
    """Put a token id on the denylist until the token would have expired anyway."""
    limiter.storage.incr(f"revoked:{jti}", max(1, int(seconds) + 1))


def denied(jti: str) -> bool:
    return limiter.storage.get(f"revoked:{jti}") > 0
