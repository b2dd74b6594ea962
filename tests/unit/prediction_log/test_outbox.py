"""The prediction log's outbox without a server (gateway/prediction_log/outbox.py, gateway/prediction_log/writer.py):
a real SQLite log whose file is moved away for an outage (every connection then finds
no table: an OperationalError, as a stopped server gives), and a real outbox file."""

import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from core.database import schema
from core.database.engine import database_engine
from core.database.tables import predictions
from devstack.servers import ROOT
from gateway.prediction_log.outbox import Outbox, OutboxFull, decode
from gateway.prediction_log.store import LogWriteError, PredictionLog, PredictionRow
from gateway.prediction_log.writer import LogWriter

NOW = datetime.now(timezone.utc)
ROW = PredictionRow(
    request_id="r", username="alice", filename="cat.jpg", extension="jpg", upload_sha256=None,
    upload_bytes=10, created_at=NOW, success=True, status_code=200, class_id=281,
    category_name="tabby", score=88, model_name="classifier", model_version="1.0", latency_ms=40,
    error_detail=None, arm="default", rollout_id=None, shadow_top1_agree=None,
    shadow_top5_overlap=None, trace_id=None)


class Database:
    """A SQLite prediction log that can be taken away and brought back."""

    def __init__(self, tmp_path):
        self.path = tmp_path / "log.db"
        self.url = f"sqlite:///{self.path}"
        schema.upgrade(self.url)
        self.log = PredictionLog(database_engine(self.url))
        self.erased: dict[str, float] = {}

    def stop(self):
        self.log.engine.dispose()
        self.path.rename(self.path.with_suffix(".away"))

    def start(self):
        self.log.engine.dispose()
        self.path.unlink(missing_ok=True)  # the empty file a connection made meanwhile
        self.path.with_suffix(".away").rename(self.path)

    def rows(self) -> list:
        with self.log.engine.connect() as connection:
            return connection.execute(select(predictions).order_by(predictions.c.id)).all()


@pytest.fixture
def database(tmp_path):
    return Database(tmp_path)


def writer_for(database, tmp_path, max_rows=1000, max_age=3600.0) -> LogWriter:
    # Not started: no drainer thread, the test runs each round itself.
    return LogWriter(database.log, Outbox(tmp_path / "outbox.db", max_rows, max_age),
                     lambda since: database.erased)


def rows(count: int, **changes) -> list[PredictionRow]:
    return [replace(ROW, request_id=f"r{i}", **changes) for i in range(count)]


def test_every_worker_process_may_open_a_new_outbox_at_once(tmp_path):
    """Workers boot together, each a process: each opens the new file (one turns it to
    WAL, which SQLite refuses at once while another connection has it open) and makes the
    tables if they are missing ("table already exists")."""
    go = tmp_path / "go"
    opener = ("import sys, time\n"
              "from pathlib import Path\n"
              "from gateway.prediction_log.outbox import Outbox\n"
              "go = Path(sys.argv[1])\n"
              "while not go.exists():\n"
              "    time.sleep(0.001)\n"
              "for n in range(100):  # 100 new files, each opened by every process\n"
              "    Outbox(f'{sys.argv[2]}-{n}', 10, 60).depth(time.time())\n")
    processes = [subprocess.Popen([sys.executable, "-c", opener, str(go),
                                   str(tmp_path / "outbox.db")], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(2)  # every process imported and polling (a late one only opens later)
    go.touch()
    failures = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, failures


def test_a_row_is_on_disk_in_the_outbox_when_record_returns(database, tmp_path):
    writer = writer_for(database, tmp_path)
    database.stop()
    writer.record(*rows(3))
    # Another process's view of the file, through the plain sqlite3 module.
    with sqlite3.connect(tmp_path / "outbox.db") as other:
        stored = [decode(text) for (text,) in other.execute("SELECT row FROM outbox ORDER BY seq")]
    assert stored == rows(3)
    assert writer.drain_once().database_ok is False  # still down: nothing leaves
    assert writer.outbox.depth(time.time()).rows == 3


def test_outboxed_rows_reach_the_database_in_order_and_later_rows_follow_them(database, tmp_path):
    writer = writer_for(database, tmp_path)
    writer.record(replace(ROW, request_id="before"))
    database.stop()
    for i in range(5):
        writer.record(replace(ROW, request_id=f"during{i}"))
    database.start()
    writer.record(replace(ROW, request_id="after"))  # the outbox is not empty: behind it
    status = writer.drain_once()
    assert (status.database_ok, status.outbox.rows, status.describe()) == (True, 0, None)
    writer.record(replace(ROW, request_id="direct"))  # empty again: straight in
    assert [r.request_id for r in database.rows()] == [
        "before", *(f"during{i}" for i in range(5)), "after", "direct"]
    assert [r.outbox_id is not None for r in database.rows()] == [False, *[True] * 6, False]


def test_a_row_delivered_twice_stays_one_row(database, tmp_path):
    writer = writer_for(database, tmp_path)
    database.stop()
    writer.record(*rows(4))
    database.start()
    # The database committed a delivery whose removal from the outbox never happened.
    queued = writer.outbox.oldest(10)
    database.log.deliver([(q.uid, q.row) for q in queued[:2]])
    writer.drain_once()
    delivered = database.rows()
    assert sorted(r.request_id for r in delivered) == [f"r{i}" for i in range(4)]
    assert len({r.outbox_id for r in delivered}) == 4


def test_past_its_bound_the_outbox_refuses_rather_than_drops(database, tmp_path):
    writer = writer_for(database, tmp_path, max_rows=3)
    database.stop()
    writer.record(*rows(3))
    with pytest.raises(LogWriteError, match="OUTBOX_MAX_ROWS 3"):
        writer.record(ROW)
    assert writer.drain_once().refused.startswith("the outbox holds 3 rows")
    assert writer.outbox.depth(time.time()).rows == 3  # nothing dropped
    aged = writer_for(database, tmp_path, max_age=60)
    with pytest.raises(OutboxFull, match="OUTBOX_MAX_AGE_SECONDS 60"):
        aged.outbox.put(time.time() + 61, ROW)  # the oldest row is now 61 s old
    database.start()
    assert writer.drain_once().refused is None
    assert len(database.rows()) == 3


def test_rows_of_a_user_erased_while_they_waited_are_not_delivered(database, tmp_path):
    writer = writer_for(database, tmp_path)
    database.stop()
    writer.record(*rows(2), *rows(2, username="bob"))
    database.erased["alice"] = (NOW + timedelta(seconds=1)).timestamp()  # erased after them
    database.start()
    writer.drain_once()
    assert [r.username for r in database.rows()] == ["bob", "bob"]
    writer.record(replace(ROW, created_at=NOW + timedelta(seconds=2)))  # after the erasure
    assert [r.username for r in database.rows()] == ["bob", "bob", "alice"]


def test_a_row_the_database_refuses_is_set_aside_and_the_rest_delivered(database, tmp_path):
    writer = writer_for(database, tmp_path)
    database.stop()
    writer.record(replace(ROW, request_id="good1"), replace(ROW, request_id=None),
                  replace(ROW, request_id="good2"))  # NOT NULL: the row itself is refused
    database.start()
    assert writer.drain_once().outbox.rows == 0
    assert [r.request_id for r in database.rows()] == ["good1", "good2"]
    assert writer.outbox.rejected_count() == 1


def test_a_row_the_database_refuses_while_it_is_up_is_an_error_not_outboxed(database, tmp_path):
    writer = writer_for(database, tmp_path)
    with pytest.raises(LogWriteError):
        writer.record(replace(ROW, request_id=None))
    assert writer.outbox.depth(time.time()).rows == 0
