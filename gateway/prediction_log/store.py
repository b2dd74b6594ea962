"""The prediction log: one row per image asked for, success or failure.

SQLAlchemy Core on DATABASE_URL: a SQLite file by default (WAL mode, so readers
never block the single writer and several worker processes can share it),
PostgreSQL in Kubernetes. The row is written before the response is sent, in a short
transaction from the connection pool that the rows of calls arriving meanwhile share
(group commit); only the rows of calls shed before their body was read are written
behind (WriteBehind). The table is in core/database/tables.py.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from core.database.engine import as_utc
from core.database.tables import predictions
from gateway.lifecycle import at_process_exit

logger = logging.getLogger(__name__)
INSERT = insert(predictions)
DELETE_BATCH = 2000  # rows per delete transaction: short locks, no table rewrite


@dataclass(frozen=True, kw_only=True)
class PredictionRow:
    """One row to write: every column but `id`, each named when it is built (no
    defaults, so a forgotten column is a TypeError, not a silent NULL)."""

    request_id: str
    username: str | None
    filename: str | None
    extension: str | None
    upload_sha256: str | None
    upload_bytes: int | None
    created_at: datetime
    success: bool
    status_code: int
    class_id: int | None
    category_name: str | None
    score: int | None
    model_version: str | None
    latency_ms: int
    error_detail: str | None
    arm: str | None  # default | canary | shadow | pinned (gateway.models.rollouts)
    rollout_id: int | None
    shadow_top1_agree: bool | None
    shadow_top5_overlap: int | None
    trace_id: str | None  # 32 hex digits: the request's trace (core.tracing)
    model_name: str | None


class LogWriteError(RuntimeError):
    """A call's rows were not written: the transaction they shared failed."""


@dataclass(eq=False)
class _Pending:
    """One call's rows waiting for a commit, and how it went."""
    rows: list[dict]
    written: bool = False
    error: Exception | None = None


class GroupCommit:
    """One INSERT statement's rows, committed when commit() returns, else LogWriteError.
    Calls that arrive while a commit runs wait for it, and the first of them then
    commits all of their rows in one transaction (a commit per burst, not per call, each
    call still answered only after its own rows are durable)."""

    def __init__(self, engine: Engine, statement):
        self.engine, self.statement = engine, statement
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._writer = threading.Lock()  # one commit at a time

    def commit(self, rows: list[dict]) -> None:
        mine = _Pending(rows)
        with self._pending_lock:
            self._pending.append(mine)
        with self._writer:
            if not mine.written:
                self._commit_pending()
        if mine.error is not None:
            raise LogWriteError(f"prediction log write failed: {mine.error}") from mine.error

    def _commit_pending(self) -> None:
        """Under _writer: every waiting call's rows in one transaction."""
        with self._pending_lock:
            group, self._pending = self._pending, []
        error = None
        try:
            with self.engine.begin() as connection:
                # One statement object with bound parameters: compiled once, then cached.
                connection.execute(self.statement, [row for call in group for row in call.rows])
        except Exception as exc:  # each call of the group is told, in its own thread
            error = exc
        for call in group:
            call.written, call.error = True, error


class PredictionLog:
    """Reads and writes the table; its schema is kept by migrations (gateway.cli.db)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._commit = GroupCommit(engine, INSERT)

    def record(self, *rows: PredictionRow) -> None:
        """A call's rows, committed when this returns, else LogWriteError (group commit)."""
        # Shallow dicts (asdict() deep-copies).
        self._commit.commit([vars(row) for row in rows])

    def deliver(self, items: list[tuple[str, PredictionRow]]) -> None:
        """Outboxed rows (gateway.prediction_log.writer), each with its outbox id, in one
        transaction; a row whose id is already here is skipped, so a repeat adds none."""
        if not items:
            return
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(predictions).on_conflict_do_nothing(
            index_elements=["outbox_id"])
        with self.engine.begin() as connection:
            connection.execute(statement, [{**vars(row), "outbox_id": uid}
                                           for uid, row in items])

    def page(self, names: Sequence[str] | None, limit: int, before: int | None) -> list[dict]:
        """Newest first, times in UTC; `names` are the user's stored names
        (gateway.prediction_log.privacy), None for everyone's; `before` is the id to continue below."""
        query = select(predictions).order_by(predictions.c.id.desc()).limit(limit)
        if names is not None:
            query = query.where(predictions.c.username.in_(names))
        if before is not None:
            query = query.where(predictions.c.id < before)
        with self.engine.connect() as connection:
            return [{**row._mapping, "created_at": as_utc(row.created_at)}
                    for row in connection.execute(query)]

    def delete(self, where: ColumnElement[bool], batch: int = DELETE_BATCH,
               pause: float = 0.0) -> int:
        """Delete the rows `where` selects, oldest first, `batch` rows per transaction
        with `pause` seconds between them (writers get the lock in between); how many
        went."""
        deleted = 0
        while True:
            ids = select(predictions.c.id).where(where).order_by(predictions.c.id).limit(batch)
            with self.engine.begin() as connection:
                count = connection.execute(
                    delete(predictions).where(predictions.c.id.in_(ids.scalar_subquery()))
                ).rowcount
            deleted += count
            if count < batch:
                return deleted
            time.sleep(pause)


class WriteBehind:
    """The rows of calls shed before their body was read, written after the answer by
    one thread, all that arrived within FLUSH_S in one transaction. A shed call was never
    accepted work, so its answer need not wait for its row; a flood of refusals then
    costs a commit per FLUSH_S, not one each. A crash loses at most the last FLUSH_S of
    them; past QUEUE_LIMIT waiting rows, or when the database fails, rows are counted as
    lost instead (the gateway's gateway_shed_rows_lost_total)."""

    FLUSH_S = 0.2
    QUEUE_LIMIT = 10_000

    def __init__(self, record: Callable[..., None], lost: Callable[[int], None]):
        self.record, self.lost = record, lost  # record(*rows); lost(n): n rows not written
        self._rows: deque[PredictionRow] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, *rows: PredictionRow) -> None:
        with self._lock:
            if len(self._rows) + len(rows) > self.QUEUE_LIMIT:
                self.lost(len(rows))
                return
            self._rows.extend(rows)
            if self._thread is None:  # started in the process that serves (after a fork)
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="shed-rows")
                self._thread.start()
                at_process_exit(self.flush)

    def flush(self) -> None:
        """Write every waiting row now."""
        with self._lock:
            rows = list(self._rows)
            self._rows.clear()
        if not rows:
            return
        try:
            self.record(*rows)
        except Exception as exc:
            logger.error("%d rows of shed calls not written: %s", len(rows), exc)
            self.lost(len(rows))

    def _run(self) -> None:
        while True:
            time.sleep(self.FLUSH_S)
            self.flush()
