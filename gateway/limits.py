"""Rate limits and the token denylist, in one shared storage (Flask-Limiter).

RATE_LIMIT_STORAGE_URI picks it: memory:// for one process, redis:// when several
processes or replicas serve, so every limit and every revoked token holds across
all of them.
"""

import math
import time

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many

from gateway.errors import ApiError

limiter = Limiter(get_remote_address)


def init_app(app: Flask, storage_uri: str) -> None:
    # wrap_exceptions: a storage outage raises limits' StorageError, which the app
    # answers with 503 (fail closed: no unlimited logins, no unchecked revocations).
    app.config.update(RATELIMIT_STORAGE_URI=storage_uri, RATELIMIT_HEADERS_ENABLED=True,
                      RATELIMIT_STORAGE_OPTIONS={"wrap_exceptions": True})
    limiter.init_app(app)


def login_user_key() -> str:
    return f"login:{request.form.get('username', '')}|{get_remote_address()}"


def login_address_key() -> str:
    return f"login-address:{get_remote_address()}"


def check_quota(limit: str, key: str, what: str) -> None:
    """Count one request against `limit` under `key`; ApiError 429 when over it.

    Done here rather than with a limiter decorator: the key is the authenticated user,
    known only inside the view, and Flask-Limiter's header injection would overwrite
    every Retry-After of the route (a 503's included) with the quota window's.
    """
    for item in parse_many(limit):
        if not limiter.limiter.hit(item, key):
            reset, _ = limiter.limiter.get_window_stats(item, key)
            retry = max(1, math.ceil(reset - time.time()))
            raise ApiError(429, f"{what} quota of {item} exceeded, try again later", {
                "Retry-After": str(retry),
                "X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(reset)),
                "RateLimit-Limit": str(item.amount), "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(retry)})


def deny(jti: str, seconds: float) -> None:
    """Put a token id on the denylist until the token would have expired anyway."""
    limiter.storage.incr(f"revoked:{jti}", max(1, int(seconds) + 1))


def denied(jti: str) -> bool:
    return limiter.storage.get(f"revoked:{jti}") > 0
