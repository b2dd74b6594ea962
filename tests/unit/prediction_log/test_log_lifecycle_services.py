"""The prediction log's lifecycle without a server: retention, erasure, pseudonyms, usage
reports and the export, on a SQLite log (tests/e2e/test_log_lifecycle.py runs them on
PostgreSQL too, through real gateways)."""

import csv
import io
import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from core.database import schema
from core.database.engine import database_engine
from core.database.tables import predictions
from core.model_history import Actor
from core.settings import Settings
from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.store import RolloutStore
from gateway.prediction_log import export as log_export
from gateway.prediction_log import retention
from gateway.prediction_log.erasures import Erasures
from gateway.prediction_log.privacy import LogPrivacy, PrivacyError, new_key, read_keys
from gateway.prediction_log.store import PredictionLog, PredictionRow
from gateway.prediction_log.usage import GROUPS, usage
from tests.support.usage import direct_usage

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
OPS = Actor("ops")


@pytest.fixture
def log(tmp_path) -> PredictionLog:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    schema.upgrade(url)
    return PredictionLog(database_engine(url))


def row(i: int, *, days_ago: float = 0, username="alice", status=200, arm=None,
        rollout_id=None, request_id=None, detail=None, version="1.0", image=True,
        latency=None) -> PredictionRow:
    return PredictionRow(
        request_id=request_id or f"r{i}", username=username, filename=f"IMG_{i}.jpg",
        extension="jpg", upload_sha256="0" * 64 if image else None,
        upload_bytes=1000 if image else None,
        created_at=NOW - timedelta(days=days_ago), success=status == 200, status_code=status,
        class_id=1 if status == 200 else None, category_name="x" if status == 200 else None,
        score=50 if status == 200 else None, model_name="classifier", model_version=version,
        latency_ms=i % 97 if latency is None else latency, error_detail=detail, arm=arm,
        rollout_id=rollout_id, shadow_top1_agree=None, shadow_top5_overlap=None, trace_id=None)


def all_rows(log: PredictionLog) -> list:
    with log.engine.connect() as connection:
        return connection.execute(select(predictions).order_by(predictions.c.id)).all()


# ---- retention -----------------------------------------------------------------------
def test_a_purge_deletes_the_old_rows_in_batches_but_an_active_rollouts(log):
    store = RolloutStore(log.engine, "classifier")
    ended = store.start("canary", "2.0", 10, False, Guard(min_requests=1000), OPS)
    log.record(*(row(i, days_ago=40, rollout_id=ended.id, arm="canary") for i in range(30)))
    figures = store.stats(ended)
    store.end(ended, "aborted", "test", OPS)
    active = store.start("shadow", "3.0", 10, False, Guard(min_requests=1000), OPS)
    log.record(*(row(100 + i, days_ago=40) for i in range(25)),
               *(row(200 + i, days_ago=40, rollout_id=active.id, arm="shadow") for i in range(7)),
               *(row(300 + i, days_ago=29) for i in range(11)))

    done = retention.purge(log.engine, 30, now=NOW, batch=4, pause=0)

    assert done.rows_deleted == 55 and done.rollouts_frozen == 1
    kept = all_rows(log)
    assert sorted(r.request_id for r in kept) == sorted(
        [f"r{200 + i}" for i in range(7)] + [f"r{300 + i}" for i in range(11)])
    assert store.stats(ended) == json.loads(json.dumps(figures))  # as before the purge
    assert retention.purge(log.engine, 0, now=NOW).rows_deleted == 0
    assert len(all_rows(log)) == 18


def test_a_rollout_that_ends_while_a_purge_runs_keeps_its_rows_until_the_next(log,
                                                                           monkeypatch):
    store = RolloutStore(log.engine, "classifier")
    rollout = store.start("canary", "2.0", 10, False, Guard(min_requests=1000), OPS)
    log.record(*(row(i, days_ago=40, rollout_id=rollout.id, arm="canary") for i in range(5)))
    # It ends after the purge kept the ended rollouts' figures, before it deletes.
    monkeypatch.setattr(retention, "freeze_ended",
                        lambda *args: store.end(rollout, "aborted", "test", OPS) and 0)
    assert retention.purge(log.engine, 30, now=NOW, pause=0).rows_deleted == 0
    monkeypatch.undo()
    assert retention.purge(log.engine, 30, now=NOW, pause=0).rows_deleted == 5


# ---- pseudonyms and erasure ------------------------------------------------------------
def test_keys_files_rotate_and_old_keys_still_find_their_rows(tmp_path):
    keys = tmp_path / "keys.json"
    assert new_key(keys) == "k1"
    settings = Settings(jwt_secret="", prediction_log_usernames="keyed-hash",
                        prediction_log_keys_file=str(keys))
    before = LogPrivacy.from_settings(settings)
    assert new_key(keys) == "k2" and read_keys(keys)[0] == "k2"
    after = LogPrivacy.from_settings(settings)
    assert after.stored_user("alice") != before.stored_user("alice")
    assert before.stored_user("alice") in after.names_of("alice")
    assert "alice" in after.names_of("alice")  # rows from before the switch
    assert len(after.stored_user("a" * 64)) <= predictions.c.username.type.length
    assert oct(keys.stat().st_mode)[-3:] == "600"
    with pytest.raises(PrivacyError):
        LogPrivacy.from_settings(Settings(jwt_secret="", prediction_log_usernames="keyed-hash"))
    with pytest.raises(PrivacyError):
        LogPrivacy.from_settings(Settings(jwt_secret="", prediction_log_filenames="some"))


def test_an_erasure_deletes_every_row_of_the_user_under_every_name_and_no_other(log):
    privacy = LogPrivacy("keyed-hash", "full", "k2", (("k1", b"1" * 32), ("k2", b"2" * 32)))
    names = privacy.names_of("alice")
    log.record(*(row(i, username=names[i % 3]) for i in range(10)),
               *(row(100 + i, username="bob") for i in range(4)))
    erasures = Erasures(log.engine, privacy, token_ttl_seconds=1800)
    assert erasures.recent() == {}
    before = datetime.now(timezone.utc)

    erasure = erasures.erase("alice", "admin")

    assert erasure.rows_deleted == 10
    assert {r.username for r in all_rows(log)} == {"bob"}
    assert erasures.recent() == {"alice": erasure.erased_at.timestamp()}
    # An outbox delivers none of her rows from before the erasure, under any name.
    assert erasures.erased_since(before) == dict.fromkeys(names, erasure.erased_at.timestamp())


# ---- usage --------------------------------------------------------------------------
def test_usage_figures_equal_a_direct_count(log):
    rnd = random.Random(29)
    rows = []
    for i in range(600):
        status = rnd.choice([200] * 8 + [422, 429, 503, 500, 404])
        rows.append(row(
            i, days_ago=rnd.choice([0.1, 1.1, 2.1, 40]), username=rnd.choice(["alice", "bob"]),
            status=status, version=rnd.choice(["1.0", "2.0"]), latency=rnd.randrange(5, 900),
            detail="over capacity: 16 in flight" if status == 503 and rnd.random() < 0.5 else None,
            image=status != 429, arm=rnd.choice([None, "default", "canary", "shadow"]),
            request_id=f"r{i}-canary" if rnd.random() < 0.05 else None))
    log.record(*rows)
    start, end = NOW - timedelta(days=30), NOW + timedelta(seconds=1)

    for group_by in GROUPS:
        for names in (None, ("bob",)):
            answered = [r for r in rows if start <= r.created_at < end]
            expected = direct_usage(answered, group_by, names)
            got = [g.describe() for g in usage(log.engine, start, end, group_by, names)]
            assert got == expected, (group_by, names)


# ---- export -------------------------------------------------------------------------
def test_the_export_gives_every_row_in_range_once_in_either_format_and_resumes(log,
                                                                            monkeypatch):
    monkeypatch.setattr(log_export, "CHUNK_ROWS", 7)
    log.record(*(row(i, days_ago=i % 3, username="o'brien, \"x\"\n") for i in range(50)))
    start, end = NOW - timedelta(days=1, hours=12), NOW + timedelta(seconds=1)
    wanted = [r for r in all_rows(log) if r.created_at >= start.replace(tzinfo=None)]

    lines = b"".join(log_export.ndjson(log_export.rows(log.engine, start, end, 0),
                                           log_export.COLUMNS)).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [r.id for r in wanted]
    assert records[0]["username"] == "o'brien, \"x\"\n"
    assert datetime.fromisoformat(records[0]["created_at"]) == wanted[0].created_at.replace(
        tzinfo=timezone.utc)

    table = list(csv.DictReader(io.StringIO(b"".join(log_export.csv_lines(
        log_export.rows(log.engine, start, end, 0), log_export.COLUMNS)).decode())))
    assert [int(r["id"]) for r in table] == [r.id for r in wanted]
    assert table[0]["username"] == "o'brien, \"x\"\n" and table[0]["error_detail"] == ""

    middle = records[len(records) // 2]["id"]
    resumed = [r["id"] for r in log_export.rows(log.engine, start, end, middle)]
    assert resumed == [r.id for r in wanted if r.id > middle]
