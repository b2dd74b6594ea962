"""Per-user prediction quotas on a real `limits` storage (gateway/predictions/quota.py)."""

import pytest
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from core.errors import ApiError
from gateway.predictions.quota import Quota


@pytest.fixture
def quota() -> Quota:
    return Quota(FixedWindowRateLimiter(MemoryStorage()), "3 per minute")


def test_within_the_default_quota(quota):
    for _ in range(3):
        quota.check("alice")


def test_over_the_quota_is_429_with_its_headers(quota):
    for _ in range(3):
        quota.check("alice")
    with pytest.raises(ApiError) as caught:
        quota.check("alice")
    error = caught.value
    assert (error.status, error.detail) == (
        429, "prediction quota of 3 per 1 minute exceeded, try again later")
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    assert error.headers["X-RateLimit-Limit"] == error.headers["RateLimit-Limit"] == "3"
    assert error.headers["RateLimit-Remaining"] == "0"


def test_each_user_has_their_own_count(quota):
    for _ in range(3):
        quota.check("alice")
    quota.check("bob")


def test_a_users_own_quota_wins_over_the_default(quota):
    for _ in range(5):
        quota.check("carol", "5 per minute")
    with pytest.raises(ApiError):
        quota.check("carol", "5 per minute")


def test_several_limits_all_hold(quota):
    quota.check("dave", "1 per minute;100 per hour")
    with pytest.raises(ApiError, match="1 per 1 minute"):
        quota.check("dave", "1 per minute;100 per hour")
