"""The rollout guard's rules as pure functions over rows (gateway/models/rollouts/guard.py)."""

from dataclasses import dataclass

import pytest

from gateway.models.rollouts.guard import Guard, breach, candidate_failed, error_rate, percentile


@dataclass(frozen=True)
class Row:
    status_code: int = 200
    latency_ms: int = 40
    shadow_top1_agree: bool | None = None


def rows(count: int, **kwargs) -> list[Row]:
    return [Row(**kwargs) for _ in range(count)]


def test_percentile_is_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile(list(range(1, 101)), 0.95) == 96
    assert percentile([7], 0.99) == 7


@pytest.mark.parametrize("status,failed", [(200, False), (415, False), (422, False),
                                           (429, False), (404, True), (500, True),
                                           (503, True), (504, True)])
def test_only_server_errors_and_a_missing_candidate_are_its_failures(status, failed):
    assert candidate_failed(status) is failed


def test_no_verdict_before_the_window_is_full():
    guard = Guard(min_requests=10)
    assert breach(guard, rows(9, status_code=500), rows(10)) is None


def test_error_rate_over_the_bound_rolls_back():
    guard = Guard(min_requests=20, max_error_rate=0.1)
    window = rows(17) + rows(3, status_code=503)
    assert error_rate(window) == 0.15
    assert breach(guard, window, rows(20)) == (
        "error_rate 0.150 over the last 20 candidate requests is above 0.1")
    assert breach(guard, rows(18) + rows(2, status_code=503), rows(20)) is None  # 0.1 is allowed


def test_clients_own_mistakes_do_not_count():
    assert breach(Guard(min_requests=10), rows(10, status_code=415), rows(10)) is None


def test_p95_ratio_compares_with_the_default_arm():
    guard = Guard(min_requests=20, max_p95_ratio=1.5)
    slow = rows(20, latency_ms=80)
    assert breach(guard, slow, rows(20, latency_ms=40)) == (
        "p95_ratio 2.00 (candidate p95 80 ms, default 40 ms) is above 1.5")
    assert breach(guard, slow, rows(20, latency_ms=60)) is None
    assert breach(guard, slow, rows(4, latency_ms=10)) is None  # too little baseline
    assert breach(Guard(min_requests=20, max_p95_ratio=None), slow, rows(20, latency_ms=1)) is None


def test_shadow_agreement_below_the_bound_rolls_back():
    guard = Guard(min_requests=10, max_p95_ratio=None, min_agreement=0.9)
    window = rows(8, shadow_top1_agree=True) + rows(2, shadow_top1_agree=False)
    assert breach(guard, window, []) == (
        "agreement 0.800 top-1 over the last 10 shadow copies is below 0.9")
    assert breach(guard, rows(10, shadow_top1_agree=True), []) is None
