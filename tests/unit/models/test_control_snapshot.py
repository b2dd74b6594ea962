"""The control snapshot without a server (gateway/models/control_snapshot.py): what predictions
read from the database, kept through an outage and across a restart."""

import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from sqlalchemy.exc import OperationalError

from core.errors import ApiError
from gateway.models.control_snapshot import (MAX_AGE_SECONDS, ControlSnapshot, ControlState,
                                             ModelState)
from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.state import Rollout
from gateway.models.versions import Serving

ROLLOUT = Rollout(7, "classifier", "canary", "2.0", 10.0, True, Guard(min_requests=50),
                  "active", None, datetime(2026, 12, 4, tzinfo=timezone.utc), None)


class Database:
    """A reader that answers with `state`, or fails as an unreachable server does."""

    def __init__(self):
        self.up, self.reads, self.read_at = True, 0, None  # read_at None: now
        self.state = ControlState(0.0, {"classifier": ModelState(
            "classifier", "1.0", {"1.0": Serving(2, 2), "2.0": Serving(0, 0, cannot_load=True)},
            ROLLOUT)}, {"alice": 1234.5})

    def read(self) -> ControlState:
        self.reads += 1
        if not self.up:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        return replace(self.state, read_at=self.read_at or time.time())


def test_the_last_state_serves_through_an_outage_and_a_restart(tmp_path):
    database, path = Database(), tmp_path / "control-snapshot.json"
    snapshot = ControlSnapshot(database.read, path)
    assert snapshot.refresh() and path.is_file()
    database.up = False
    assert snapshot.refresh() is False and snapshot.database_error == "OperationalError"
    state = snapshot.current()
    model = state.model("classifier")
    assert (model.rollout, state.tokens_valid_after("alice"), model.cannot_load("2.0")) == (
        ROLLOUT, 1234.5, True)
    # A process started during the outage: the saved state, rollout and all.
    restarted = ControlSnapshot(database.read, path)
    restarted.start()
    assert restarted.current() == state
    assert restarted.current().model("classifier").ready() == {
        "model_name": "classifier", "model_version": "1.0", "ready_workers": 2, "replicas": 2}
    # One with nothing saved waits for the database, and says so.
    empty = ControlSnapshot(database.read, tmp_path / "none.json")
    empty.start()
    with pytest.raises(ApiError, match="waiting for the database") as waiting:
        empty.current()
    assert waiting.value.status == 503


def test_a_late_refresher_is_caught_up_by_the_reader_while_the_database_answers(tmp_path):
    database = Database()
    snapshot = ControlSnapshot(database.read, tmp_path / "state.json")
    snapshot.refresh()
    assert snapshot.current() and database.reads == 1  # fresh: no read
    database.read_at = time.time() - MAX_AGE_SECONDS - 1  # what it reads is that old
    snapshot.refresh()
    snapshot.current()
    assert database.reads == 3  # older than MAX_AGE_SECONDS: read now
    database.up = False
    snapshot.current()  # read, fails: the database is out
    stale = snapshot.current()  # now served as it is, no read per call
    assert database.reads == 4 and stale.model("classifier").default_version == "1.0"
