"""Per-user prediction quotas (OWASP API4): one token cannot take the whole model server.

Plain Python over a `limits` strategy, the one Flask-Limiter builds on the configured
storage (memory://, or Redis when several processes serve), so quotas hold across
every process that shares it. Not a limiter decorator: the key is the authenticated
user, known only after the token check, and Flask-Limiter's header injection would
overwrite every Retry-After of the route (a 503's included) with the quota window's.
"""

import math
import time

from limits import parse_many
from limits.strategies import RateLimiter

from core.errors import ApiError


class Quota:
    def __init__(self, strategy: RateLimiter, default: str):
        self.strategy, self.default = strategy, default

    def check(self, username: str, own_limit: str | None = None) -> None:
        """Count one prediction call of `username` against their own limit, or the
        default; ApiError 429 when it is used up (storage outages raise limits'
        StorageError)."""
        key = f"predict:{username}"
        for item in parse_many(own_limit or self.default):
            if not self.strategy.hit(item, key):
                reset, _ = self.strategy.get_window_stats(item, key)
                retry = max(1, math.ceil(reset - time.time()))
                raise ApiError(429, f"prediction quota of {item} exceeded, try again later", {
                    "Retry-After": str(retry),
                    "X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(reset)),
                    "RateLimit-Limit": str(item.amount), "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(retry)})
