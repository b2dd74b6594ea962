"""What an operator may send to start a rollout (gateway/models/rollouts/control.py)."""

import pytest

from core.errors import ApiError
from gateway.models.rollouts.control import parse_rollout
from gateway.models.rollouts.guard import Guard


def test_a_canary_with_defaults():
    assert parse_rollout({"version": "2.0", "percent": 10}) == (
        "canary", "2.0", 10.0, False, Guard())


def test_a_shadow_with_its_guard():
    mode, version, percent, sticky, guard = parse_rollout(
        {"mode": "shadow", "version": "2.0", "percent": 100, "sticky": True,
         "guard": {"min_requests": 200, "min_agreement": 0.9, "max_p95_ratio": None}})
    assert (mode, percent, sticky) == ("shadow", 100.0, True)
    assert guard == Guard(min_requests=200, max_p95_ratio=None, min_agreement=0.9)


@pytest.mark.parametrize("body,detail", [
    ([], 'send JSON {"mode": "canary", "version": "2.0", "percent": 10, ...}'),
    ({"version": "2.0", "percent": 10, "colour": "red"}, "unknown field(s): colour"),
    ({"percent": 10}, "version is required (a registered model version)"),
    ({"version": "../x", "percent": 10},
     "model version must be 1-32 letters, digits, '.', '_' or '-'"),
    ({"version": "2.0", "percent": 0}, "percent must be a number above 0 and at most 100"),
    ({"version": "2.0", "percent": True}, "percent must be a number above 0 and at most 100"),
    ({"version": "2.0", "percent": 10, "mode": "blue"}, "mode must be one of canary, shadow"),
    ({"version": "2.0", "percent": 10, "sticky": "yes"}, "sticky must be true or false"),
    ({"version": "2.0", "percent": 10, "guard": {"min_requests": 4}},
     "guard.min_requests must be an integer from 5 to 100000"),
    ({"version": "2.0", "percent": 10, "guard": {"max_error_rate": None}},
     "guard.max_error_rate must be a number from 0 to 1"),
    ({"version": "2.0", "percent": 10, "guard": {"bogus": 1}},
     "guard must be an object with min_requests, max_error_rate, max_p95_ratio and/or "
     "min_agreement"),
    ({"version": "2.0", "percent": 10, "guard": {"min_agreement": 0.9}},
     "guard.min_agreement applies to shadow mode only"),
], ids=["not_an_object", "unknown_field", "no_version", "bad_version", "zero_percent",
        "bool_percent", "bad_mode", "bad_sticky", "small_window", "null_error_rate",
        "unknown_guard_field", "agreement_on_canary"])
def test_bad_bodies_are_422(body, detail):
    with pytest.raises(ApiError) as caught:
        parse_rollout(body)
    assert (caught.value.status, caught.value.detail) == (422, detail)
