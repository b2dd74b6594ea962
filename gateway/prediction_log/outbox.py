"""The prediction log's outbox: the rows the database could not take, in a local SQLite
file (WAL, synchronous=FULL: a row is on disk when put() returns), until the drainer
(gateway.prediction_log.writer) delivers them, oldest first.

Every worker process of one gateway shares the file. Each row gets an id of its own
(`uid`, the predictions table's `outbox_id`), so that a row delivered twice (the
database committed, the outbox's delete did not) stays one row. The rows stay in one
run of `seq` (they leave from the oldest end), so the count and the oldest row are two
index reads, not a scan.
"""

import fcntl
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import (Column, Float, Integer, MetaData, String, Table, Text, delete, func,
                        insert, select)
from sqlalchemy.schema import CreateTable

from core.database.engine import database_engine
from gateway.prediction_log.store import GroupCommit, PredictionRow

metadata = MetaData()
rows = Table(
    "outbox", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("queued_at", Float, nullable=False),  # epoch seconds
    Column("row", Text, nullable=False),  # JSON: the PredictionRow
    sqlite_autoincrement=True,  # seq never reused: a delivered row's seq stays behind it
)
# Rows the database refused on their own (not an outage: the row itself), kept here,
# never dropped: gateway_outbox_rejected_rows_total counts them for an operator.
rejected = Table(
    "rejected", metadata,
    Column("uid", String(32), primary_key=True),
    Column("row", Text, nullable=False),
    Column("error", Text, nullable=False),
)


class OutboxFull(RuntimeError):
    """Past the outbox's bound: the call is refused rather than a row dropped."""


@dataclass(frozen=True)
class Depth:
    rows: int
    oldest_age_seconds: float  # 0 when empty


@dataclass(frozen=True)
class Queued:
    seq: int
    uid: str
    row: PredictionRow


def encode(row: PredictionRow) -> str:
    return json.dumps({**vars(row), "created_at": row.created_at.isoformat()})


def decode(text: str) -> PredictionRow:
    values = {"model_name": None, **json.loads(text)}  # rows queued before several models
    return PredictionRow(**{**values, "created_at": datetime.fromisoformat(values["created_at"])})


class Outbox:
    def __init__(self, path: str | Path, max_rows: int, max_age_seconds: float):
        self.path = Path(path)
        self.max_rows, self.max_age_seconds = max_rows, max_age_seconds
        # FULL: a row is on disk, not only in the operating system's cache, when put() returns.
        self.engine = database_engine(f"sqlite:///{self.path}", synchronous="FULL")
        # A gateway's worker processes start together: one at a time turns a new file to WAL (a
        # change SQLite refuses at once, busy timeout or not, while another connection
        # has the file open) and makes the tables.
        with open(f"{self.path}.init-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self.engine.begin() as connection:
                for table in metadata.sorted_tables:
                    connection.execute(CreateTable(table, if_not_exists=True))
        self._commit = GroupCommit(self.engine, insert(rows))

    def depth(self, now: float) -> Depth:
        oldest = select(rows.c.queued_at).order_by(rows.c.seq).limit(1).scalar_subquery()
        with self.engine.connect() as connection:  # one statement: one consistent read
            low, high, queued_at = connection.execute(
                select(func.min(rows.c.seq), func.max(rows.c.seq), oldest)).one()
        if low is None:
            return Depth(0, 0.0)
        return Depth(high - low + 1, max(0.0, now - queued_at))

    def over_bound(self, depth: Depth) -> str | None:
        """Why the outbox takes no more rows, or None."""
        if depth.rows >= self.max_rows:
            return f"the outbox holds {depth.rows} rows (OUTBOX_MAX_ROWS {self.max_rows})"
        if depth.oldest_age_seconds >= self.max_age_seconds:
            return (f"the outbox's oldest row is {depth.oldest_age_seconds:.0f} s old "
                    f"(OUTBOX_MAX_AGE_SECONDS {self.max_age_seconds:g})")
        return None

    def put(self, now: float, *queued: PredictionRow) -> None:
        """The rows on disk when this returns (group commit, as the database's writes);
        OutboxFull past the bound (checked before the write: writers arriving together
        may pass it by their number of rows)."""
        if reason := self.over_bound(self.depth(now)):
            raise OutboxFull(reason)
        self._commit.commit([{"uid": uuid.uuid4().hex, "queued_at": now, "row": encode(row)}
                             for row in queued])

    def oldest(self, limit: int) -> list[Queued]:
        with self.engine.connect() as connection:
            found = connection.execute(
                select(rows.c.seq, rows.c.uid, rows.c.row).order_by(rows.c.seq)
                .limit(limit)).all()
        return [Queued(seq, uid, decode(text)) for seq, uid, text in found]

    def remove_through(self, seq: int) -> None:
        """Delivered: every row up to `seq`."""
        with self.engine.begin() as connection:
            connection.execute(delete(rows).where(rows.c.seq <= seq))

    def set_aside(self, item: Queued, error: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(insert(rejected).prefix_with("OR IGNORE").values(
                uid=item.uid, row=encode(item.row), error=error))

    def rejected_count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(rejected)).scalar()
