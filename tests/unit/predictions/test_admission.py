"""The in-flight bound: refusals are counted, and their Retry-After follows the load."""

import contextlib

import pytest

from core.errors import ApiError
from core.settings import Settings
from gateway import metrics
from gateway.predictions import admission
from gateway.predictions.admission import Admission


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: now[0])
    return now


def refuse(gate: Admission) -> ApiError:
    with pytest.raises(ApiError) as caught, gate.slot("alice"):
        pass
    assert caught.value.status == 503
    return caught.value


def test_retry_after_is_refusals_per_completion_in_the_window(clock):
    gate = Admission(Settings(jwt_secret="x" * 32, max_inflight_predictions=2,
                              inflight_wait_ms=0))
    shed_before = metrics.SHED._value.get()
    with contextlib.ExitStack() as held:
        held.enter_context(gate.slot("alice"))
        held.enter_context(gate.slot("alice"))
        # A burst with no completion yet: nothing to estimate from, the shortest advice.
        assert [refuse(gate).headers["Retry-After"] for _ in range(5)] == ["1"] * 5
    for _ in range(8):  # 10 completions in the window with the two above
        with gate.slot("alice"):
            pass
    with contextlib.ExitStack() as held:
        held.enter_context(gate.slot("alice"))
        held.enter_context(gate.slot("alice"))
        advice = [int(refuse(gate).headers["Retry-After"]) for _ in range(20)]
        # 6..25 refusals against 10 completions: ceil(refusals / completions).
        assert advice == [-(-refused // 10) for refused in range(6, 26)]
        assert refuse(gate).detail == ("over capacity: 2 predictions in flight in this "
                                       "gateway process, try again in 3 s")
        for _ in range(200):
            last = refuse(gate)
        assert last.headers["Retry-After"] == str(admission.RETRY_AFTER_MAX_S)
        # The window forgets: after a quiet spell the advice is 1 s again.
        clock[0] += admission.WINDOW_S + 0.1
        assert refuse(gate).headers["Retry-After"] == "1"
    assert metrics.SHED._value.get() == shed_before + 5 + 20 + 1 + 200 + 1


def test_one_user_holds_at_most_their_share(clock):
    """MAX_INFLIGHT_PER_USER: a flooding user is refused at once, another still admitted,
    and a slot given back is the user's again."""
    gate = Admission(Settings(jwt_secret="x" * 32, max_inflight_predictions=4,
                              max_inflight_per_user=2, inflight_wait_ms=0))
    with contextlib.ExitStack() as held:
        held.enter_context(gate.slot("alice"))
        held.enter_context(gate.slot("alice"))
        assert refuse(gate).detail == ("over capacity: 2 of this user's predictions in "
                                       "flight in this gateway process, try again in 1 s")
        held.enter_context(gate.slot("bob"))
        held.enter_context(gate.slot("bob"))
        with pytest.raises(ApiError) as caught, gate.slot("carol"):
            pass
        assert caught.value.detail.startswith("over capacity: 4 predictions in flight")
    assert gate._held == {}
    with gate.slot("alice"), gate.slot("alice"):
        pass
