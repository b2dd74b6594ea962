"""Who falls in a rollout's candidate share: the split and stickiness (gateway/models/rollouts/state.py)."""

from datetime import datetime, timezone

import pytest

from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.state import Rollout


def rollout(percent: float, sticky: bool, mode: str = "canary", rollout_id: int = 7) -> Rollout:
    return Rollout(rollout_id, "classifier", mode, "2.0", percent, sticky, Guard(), "active",
                   None, datetime.now(timezone.utc), None)


@pytest.mark.parametrize("percent", [0.5, 10, 50, 100])
def test_a_fresh_draw_splits_by_percent(percent):
    draws = [i / 10_000 for i in range(10_000)]  # uniform over [0, 1)
    chosen = sum(rollout(percent, sticky=False).in_candidate_share("u", d) for d in draws)
    assert chosen == round(percent * 100)


def test_sticky_keeps_each_subject_on_one_arm_whatever_the_draw():
    canary = rollout(30, sticky=True)
    for subject in (f"user{i}" for i in range(50)):
        assert len({canary.in_candidate_share(subject, d) for d in (0.0, 0.5, 0.999)}) == 1


def test_sticky_splits_subjects_by_percent():
    canary = rollout(30, sticky=True)
    chosen = sum(canary.in_candidate_share(f"user{i}", 0.0) for i in range(10_000))
    assert 2_800 <= chosen <= 3_200  # a hash, not a draw: close to 30 %, the same every run


def test_a_new_rollout_reshuffles_sticky_subjects():
    subjects = [f"user{i}" for i in range(200)]
    first = [rollout(50, True, rollout_id=1).in_candidate_share(s, 0) for s in subjects]
    second = [rollout(50, True, rollout_id=2).in_candidate_share(s, 0) for s in subjects]
    assert first != second


@pytest.mark.parametrize("mode,default_share", [("canary", 80), ("shadow", 100)])
def test_shares_per_arm(mode, default_share):
    twenty = rollout(20, sticky=False, mode=mode)
    assert twenty.share("default") == default_share and twenty.share(mode) == 20
