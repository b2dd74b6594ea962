"""The prediction pipeline without a server (gateway/predictions/pipeline.py): a scripted TorchServe,
a real SQLite prediction log with its rollouts, real admission and quota storage."""

import json
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import event, select

from core.database import schema
from core.database.engine import database_engine
from core.database.tables import predictions
from core.errors import ApiError
from core.model_history import Actor
from core.settings import Settings
from core.torchserve_client import Answer
from devstack import images
from devstack.waiting import wait_for
from gateway.models.control_snapshot import ControlSnapshot, ControlState, ModelState
from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.store import RolloutStore
from gateway.prediction_log.erasures import Erasures
from gateway.prediction_log.outbox import Outbox
from gateway.prediction_log.privacy import LogPrivacy
from gateway.prediction_log.store import LogWriteError, PredictionLog, PredictionRow, WriteBehind
from gateway.prediction_log.writer import LogWriter
from gateway.predictions.admission import Admission
from gateway.predictions.pipeline import PredictionPipeline, PredictionRequest
from gateway.predictions.quota import Quota
from gateway.predictions.shadow import ShadowQueue
from gateway.predictions.uploads import Form, Upload

PHOTO = Upload("cat.jpg", images.jpeg())
OPS = Actor("ops")


class ScriptedTorchServe:
    """Answers like TorchServe: per version, a class id, or an ApiError to raise."""

    def __init__(self):
        self.answers = {None: 281, "1.0": 281, "2.0": 282}
        self.calls = []

    def predict(self, image: bytes, version: str | None, request_id: str, model: str) -> Answer:
        self.calls.append((version, request_id))
        answer = self.answers.get(version, ApiError(404, f"version {version} is not registered"))
        if isinstance(answer, ApiError):
            raise answer
        top = [{"class_id": answer + i, "category_name": f"c{answer + i}", "probability": p}
               for i, p in enumerate((0.6, 0.2, 0.1, 0.05, 0.05))]
        served = version or "1.0"
        result = {"predictions": top, "model_name": model, "model_version": served}
        return Answer(result, json.dumps(result).encode(),
                      {"preprocess": 0.001, "inference": 0.002, "postprocess": 0.0001})


@pytest.fixture
def privacy() -> LogPrivacy:
    return LogPrivacy()


@pytest.fixture
def parts(tmp_path, privacy):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    schema.upgrade(url)
    settings = Settings(jwt_secret="k" * 40, database_url=url, max_inflight_predictions=1,
                        inflight_wait_ms=0)
    log = PredictionLog(database_engine(url))
    rollouts = RolloutStore(log.engine, "classifier")
    writer = LogWriter(log, Outbox(tmp_path / "outbox.db", 1000, 3600),
                       Erasures(log.engine, privacy, 1800).erased_since)
    snapshot = ControlSnapshot(lambda: ControlState(time.time(), {"classifier": ModelState(
        "classifier", "1.0", {}, rollouts.active())}), tmp_path / "state.json")
    snapshot.refresh()  # as the app's start does (no refresher thread here)
    torchserve = ScriptedTorchServe()
    pipeline = PredictionPipeline(
        settings, torchserve, Admission(settings),
        Quota(FixedWindowRateLimiter(MemoryStorage()), "5 per minute"), writer, privacy,
        lambda name: rollouts, snapshot, ShadowQueue(1, 4), max_batch=8)
    return pipeline, torchserve, log, rollouts


def rows(log: PredictionLog) -> list:
    with log.engine.connect() as connection:
        return connection.execute(select(predictions).order_by(predictions.c.id)).all()


def call(pipeline, request_id="r1", username="alice", pinned=None, uploads=(PHOTO,),
         own_quota=None, numbered=False, read=None):
    return pipeline.predict(PredictionRequest(
        request_id, username, own_quota, "classifier", pinned,
        read or (lambda: Form(tuple(uploads))), numbered))


@pytest.mark.parametrize("privacy", [
    LogPrivacy("keyed-hash", "extension-only", "k2", (("k1", b"a" * 32), ("k2", b"b" * 32)))])
def test_a_pseudonymous_log_keeps_neither_the_name_nor_the_file_name(parts, privacy):
    pipeline, *_, log, _ = parts
    assert call(pipeline, username="alice").status == 200
    (row,) = rows(log)
    assert "alice" not in str(tuple(row)) and PHOTO.filename not in str(tuple(row))
    assert row.username == privacy.stored_user("alice") and row.username.startswith("hmac:k2:")
    assert row.username in privacy.names_of("alice")
    assert row.extension == PHOTO.extension
    assert [r["request_id"] for r in log.page(privacy.names_of("alice"), 10, None)] == ["r1"]
    assert log.page(privacy.names_of("bob"), 10, None) == []


def test_an_unpinned_call_is_answered_by_the_default_and_logged_once(parts):
    pipeline, torchserve, log, _ = parts
    outcome = call(pipeline)
    assert outcome.status == 200 and outcome.error is None
    assert outcome.answers[0].class_id == 281 and outcome.model_version == "1.0"
    assert (outcome.route.arm, outcome.route.version) == ("default", None)
    assert list(outcome.stages) == ["quota", "read", "check", "upstream", "preprocess",
                                    "inference", "postprocess", "log"]
    [row] = rows(log)
    assert (row.request_id, row.username, row.status_code, row.class_id, row.arm,
            row.filename, row.upload_bytes) == ("r1", "alice", 200, 281, "default", "cat.jpg",
                                                len(PHOTO.data))
    assert torchserve.calls == [(None, "r1")]


def test_a_pinned_call_goes_to_its_version(parts):
    pipeline, torchserve, log, _ = parts
    outcome = call(pipeline, pinned="2.0")
    assert outcome.answers[0].class_id == 282 and rows(log)[0].arm == "pinned"
    missing = call(pipeline, request_id="r2", pinned="9.9")
    assert missing.status == 404 and rows(log)[1].model_version == "9.9"
    bad = call(pipeline, request_id="r3", pinned="../x")
    assert bad.status == 422 and torchserve.calls[-1] == ("9.9", "r2")  # never sent


def test_quota_refusals_are_logged_and_never_read_the_body(parts):
    pipeline, torchserve, log, _ = parts
    for i in range(5):
        assert call(pipeline, request_id=f"q{i}").status == 200
    read = []
    refused = call(pipeline, request_id="q5", read=lambda: read.append(1))
    assert refused.status == 429 and read == [] and refused.payload is None
    assert (rows(log)[-1].request_id, rows(log)[-1].status_code) == ("q5", 429)


def test_a_full_gateway_sheds_before_reading(parts):
    pipeline, _, log, _ = parts
    inner = []

    def read_while_holding_the_only_slot():
        inner.append(call(pipeline, request_id="shed"))
        return Form((PHOTO,))

    outer = call(pipeline, request_id="holder", read=read_while_holding_the_only_slot)
    assert outer.status == 200
    [shed] = inner
    assert shed.status == 503 and shed.error.headers["Retry-After"] == "1"
    # Its row is written behind the answer, within WriteBehind.FLUSH_S.
    shed_row = wait_for(lambda: next((r for r in rows(log) if r.request_id == "shed"), None),
                        timeout=10, what="the shed call's row")
    assert shed_row.status_code == 503 and shed_row.upload_bytes is None


SHED_ROW = PredictionRow(
    request_id="r", username="u", filename=None, extension=None, upload_sha256=None,
    upload_bytes=None, created_at=datetime.now(timezone.utc), success=False,
    status_code=503, class_id=None, category_name=None, score=None, model_name="classifier",
    model_version=None, latency_ms=1, error_detail="over capacity", arm="default", rollout_id=None,
    shadow_top1_agree=None, shadow_top5_overlap=None, trace_id=None)


def _sqlite_log(tmp_path) -> PredictionLog:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    schema.upgrade(url)
    return PredictionLog(database_engine(url))


def test_calls_that_arrive_during_a_commit_share_the_next_one(tmp_path):
    log, commits, release = _sqlite_log(tmp_path), [], threading.Event()

    def on_commit(_connection):
        commits.append(1)
        release.wait(10)  # the first commit runs until the others have queued

    event.listen(log.engine, "commit", on_commit)
    first = threading.Thread(target=log.record, args=(replace(SHED_ROW, request_id="first"),))
    first.start()
    wait_for(lambda: commits, timeout=10, what="the first commit")
    bad = replace(SHED_ROW, request_id="bad", created_at=None)  # NOT NULL: fails its group
    outcomes = {}

    def call(request_id, row):
        try:
            log.record(row)
            outcomes[request_id] = "written"
        except LogWriteError:
            outcomes[request_id] = "failed"

    def group(*rows):
        threads = [threading.Thread(target=call, args=(r.request_id, r)) for r in rows]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(log._commit._pending) == len(rows), timeout=10, what="the calls queued")
        return threads

    waiting = group(*[replace(SHED_ROW, request_id=f"r{i}") for i in range(4)])
    release.set()
    for thread in [first, *waiting]:
        thread.join(10)
    assert len(commits) == 2  # the first call's, then one for the four that waited
    assert outcomes == dict.fromkeys(["r0", "r1", "r2", "r3"], "written")
    # A failed transaction fails every call that shared it, and only those.
    release.clear()
    blocker = threading.Thread(target=log.record, args=(replace(SHED_ROW, request_id="b"),))
    blocker.start()
    wait_for(lambda: len(commits) == 3, timeout=10, what="the third commit")
    waiting = group(bad, replace(SHED_ROW, request_id="unlucky"))
    release.set()
    for thread in [blocker, *waiting]:
        thread.join(10)
    assert outcomes["bad"] == outcomes["unlucky"] == "failed"
    log.record(replace(SHED_ROW, request_id="after"))
    assert sorted(r.request_id for r in rows(log)) == sorted(
        ["first", "r0", "r1", "r2", "r3", "b", "after"])


def test_shed_rows_are_written_together_or_counted_as_lost(tmp_path):
    log, lost = _sqlite_log(tmp_path), []
    behind = WriteBehind(log.record, lost.append)
    behind.put(*[replace(SHED_ROW, request_id=f"r{i}") for i in range(3)])
    behind.flush()
    assert [r.request_id for r in rows(log)] == ["r0", "r1", "r2"] and lost == []
    behind.put(*[SHED_ROW] * (WriteBehind.QUEUE_LIMIT + 1))  # more than the queue takes
    assert lost == [WriteBehind.QUEUE_LIMIT + 1]
    log.engine.dispose()
    with log.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE predictions")
    behind.put(SHED_ROW, SHED_ROW)
    behind.flush()  # the database fails: counted, never raised
    assert lost == [WriteBehind.QUEUE_LIMIT + 1, 2]


def test_a_bad_body_is_the_readers_status_in_one_row(parts):
    pipeline, _, log, _ = parts

    def bad_read():
        raise ApiError(422, "multipart form field 'file' is required")

    outcome = call(pipeline, read=bad_read)
    assert (outcome.status, outcome.error.detail) == (422, "multipart form field 'file' is required")
    [row] = rows(log)
    assert (row.status_code, row.error_detail, row.filename) == (
        422, "multipart form field 'file' is required", None)


def test_several_images_leave_a_row_each_and_the_first_error_answers(parts):
    pipeline, _, log, _ = parts
    uploads = (Upload("image-0", images.jpeg()), Upload("image-1", b"not an image"),
               Upload("image-2", images.png()))
    outcome = call(pipeline, request_id="v2", uploads=uploads, numbered=True)
    assert outcome.status == 415 and outcome.answers == ()
    assert [(r.request_id, r.status_code) for r in rows(log)] == [
        ("v2-0", 200), ("v2-1", 415), ("v2-2", 200)]
    ok = call(pipeline, request_id="v3", uploads=uploads[::2], numbered=True)
    assert ok.status == 200 and len(ok.answers) == 2


def test_a_canary_candidate_that_fails_is_answered_by_the_default(parts):
    pipeline, torchserve, log, rollouts = parts
    torchserve.answers["2.0"] = ApiError(503, "model server could not serve the request (503)")
    rollouts.start("canary", "2.0", 100, False, Guard(min_requests=50), OPS)
    pipeline.snapshot.refresh()  # as its refresher would within a second
    outcome = call(pipeline, request_id="c1")
    assert outcome.status == 200 and outcome.answers[0].class_id == 281
    assert outcome.route.arm == "default"
    assert [(r.request_id, r.status_code, r.arm, r.model_version) for r in rows(log)] == [
        ("c1-canary", 503, "canary", "2.0"), ("c1", 200, "default", "1.0")]
    assert torchserve.calls == [("2.0", "c1"), (None, "c1")]


def test_a_canary_whose_candidate_keeps_failing_is_rolled_back(parts):
    pipeline, torchserve, _, rollouts = parts
    torchserve.answers["2.0"] = ApiError(503, "model server could not serve the request (503)")
    started = rollouts.start("canary", "2.0", 100, False, Guard(min_requests=5), OPS)
    pipeline.snapshot.refresh()  # as its refresher would within a second
    for i in range(5):
        assert call(pipeline, request_id=f"c{i}", username=f"user{i}").status == 200
    ended = rollouts.latest()
    assert ended.id == started.id and ended.state == "rolled_back"
    assert ended.reason.startswith("error_rate 1.000 over the last 5 candidate requests")


def test_a_clients_mistake_on_the_canary_is_the_clients_answer(parts):
    pipeline, torchserve, log, rollouts = parts
    rollouts.start("canary", "2.0", 100, False, Guard(), OPS)
    pipeline.snapshot.refresh()  # as its refresher would within a second
    outcome = call(pipeline, uploads=(Upload("x.txt", b"text, not an image"),))
    assert outcome.status == 415 and outcome.route.arm == "canary"
    assert [(r.status_code, r.arm) for r in rows(log)] == [(415, "canary")]
    assert torchserve.calls == []  # refused by the header check, no fallback either


def test_a_shadow_copy_is_compared_and_logged_after_the_answer(parts):
    pipeline, torchserve, log, rollouts = parts
    shadow = rollouts.start("shadow", "2.0", 100, False, Guard(min_requests=1000), OPS)
    pipeline.snapshot.refresh()  # as its refresher would within a second
    outcome = call(pipeline, request_id="s1")
    assert outcome.status == 200 and outcome.answers[0].class_id == 281
    wait_for(lambda: len(rows(log)) == 2, timeout=60, what="the shadow copy's row")
    copy = next(r for r in rows(log) if r.arm == "shadow")
    assert (copy.request_id, copy.rollout_id, copy.class_id) == ("s1-shadow", shadow.id, 282)
    # 282 against 281: a different top-1, and 4 of the top 5 in common.
    assert (copy.shadow_top1_agree, copy.shadow_top5_overlap) == (False, 4)


def test_a_log_that_cannot_be_written_turns_the_answer_into_503(parts):
    """The database is gone and the outbox is at its bound: refused, not lost."""
    pipeline, _, log, _ = parts
    pipeline.log.outbox.max_rows = 0
    log.engine.dispose()
    with log.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE predictions")
    outcome = call(pipeline)
    assert (outcome.status, outcome.error.detail) == (503, "prediction log is unavailable, try again")
    assert outcome.answers == ()
