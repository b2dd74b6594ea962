"""Where a prediction's log rows go: the database, or while it cannot take them the
outbox (gateway.prediction_log.outbox), so that an outage of the database stops no prediction and
loses no accepted row.

A process writes to the database until a write fails for an outage (the connection,
not the row: OperationalError, InterfaceError, a pool timeout); from then on, and while
the outbox holds rows, it writes to the outbox, so the log keeps the order of the
calls. Each process runs a drainer thread: every DRAIN_INTERVAL_S the one that holds the
drain lock delivers the outbox's oldest rows to the database in DRAIN_BATCH-row
transactions, each idempotent on the row's outbox id, and drops from them only the rows
of users erased since (gateway.prediction_log.erasures): an erasure that ran while a row waited is not
undone by its delivery.
"""

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway import metrics
from gateway.lifecycle import at_process_exit
from gateway.prediction_log.outbox import Depth, Outbox, OutboxFull, Queued
from gateway.prediction_log.store import LogWriteError, PredictionLog, PredictionRow

logger = logging.getLogger(__name__)
DRAIN_INTERVAL_S = 0.5
DRAIN_BATCH = 500


def is_outage(exc: BaseException | None) -> bool:
    """The database could not be reached (or answer), as opposed to refusing a row."""
    return isinstance(exc, (OperationalError, InterfaceError, PoolTimeout))


@dataclass(frozen=True)
class LogStatus:
    database_ok: bool
    outbox: Depth
    refused: str | None  # why the outbox takes no more rows (the gateway answers 503)

    def describe(self) -> str | None:
        """What /readyz says of a degraded log; None when it is not."""
        if self.database_ok and not self.outbox.rows:
            return None
        database = "database available" if self.database_ok else "database unavailable"
        return (f"{database}, {self.outbox.rows} rows in the outbox, oldest "
                f"{self.outbox.oldest_age_seconds:.0f} s")


class LogWriter:
    def __init__(self, log: PredictionLog, outbox: Outbox,
                 erased_since: Callable[[datetime], Mapping[str, float]]):
        """`erased_since(t)`: each stored user name erased after t, with the moment."""
        self.log, self.outbox, self.erased_since = log, outbox, erased_since
        self._outboxing = False  # this process writes to the outbox
        self._status = LogStatus(True, Depth(0, 0.0), None)
        self._drain_lock_path = f"{outbox.path}.drain-lock"

    @property
    def status(self) -> LogStatus:
        return self._status

    def record(self, *rows: PredictionRow) -> None:
        """The rows durable (in the database or the outbox) when this returns, else
        LogWriteError: the call is answered 503."""
        if not self._outboxing:
            try:
                self.log.record(*rows)
                return
            except LogWriteError as exc:
                if not is_outage(exc.__cause__):
                    raise
                logger.error("database unavailable, rows go to the outbox: %s", exc.__cause__)
                self._outboxing = True
        try:
            self.outbox.put(time.time(), *rows)
        except OutboxFull as exc:
            raise LogWriteError(str(exc)) from exc
        metrics.OUTBOXED_ROWS.inc(len(rows))

    # ---- the drainer ----------------------------------------------------------------
    def start(self) -> None:
        """The drainer, in the process that serves (a server's worker)."""
        threading.Thread(target=self._run, daemon=True, name="outbox").start()
        at_process_exit(self.drain_once)

    def _run(self) -> None:
        while True:
            try:
                self.drain_once()
            except Exception:  # the outbox's own file: keep trying, say so
                logger.exception("outbox drainer round failed")
            time.sleep(DRAIN_INTERVAL_S)

    def drain_once(self) -> LogStatus:
        """One round: deliver what the outbox holds (if this process holds the drain
        lock), probe the database while this process outboxes, publish the status."""
        database_ok = self._status.database_ok
        if self.outbox.depth(time.time()).rows:
            with open(self._drain_lock_path, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another process drains
                else:
                    database_ok = self._deliver()
        elif self._outboxing or not database_ok:
            database_ok = self._probe()
        depth = self.outbox.depth(time.time())
        self._outboxing = bool(depth.rows) or not database_ok
        self._status = LogStatus(database_ok, depth, self.outbox.over_bound(depth))
        metrics.DATABASE_UP.set(int(database_ok))
        metrics.OUTBOX_ROWS.set(depth.rows)
        metrics.OUTBOX_OLDEST_SECONDS.set(depth.oldest_age_seconds)
        return self._status

    def _probe(self) -> bool:
        try:
            with self.log.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def _deliver(self) -> bool:
        """Batches until the outbox is empty; False when the database is (still) out."""
        while batch := self.outbox.oldest(DRAIN_BATCH):
            try:
                erased = self.erased_since(min(q.row.created_at for q in batch))
                kept = [q for q in batch
                        if erased.get(q.row.username, 0.0) <= q.row.created_at.timestamp()]
                set_aside = 0
                try:
                    self.log.deliver([(q.uid, q.row) for q in kept])
                except SQLAlchemyError as exc:
                    if is_outage(exc):
                        raise
                    set_aside = self._one_by_one(kept)
            except SQLAlchemyError as exc:
                if is_outage(exc):
                    return False
                raise
            self.outbox.remove_through(batch[-1].seq)
            metrics.OUTBOX_DELIVERED_ROWS.inc(len(kept) - set_aside)
            logger.info("outbox: %d rows delivered, %d set aside, %d of erased users dropped",
                        len(kept) - set_aside, set_aside, len(batch) - len(kept))
        return True

    def _one_by_one(self, batch: list[Queued]) -> int:
        """A batch the database refused for a row in it: each row alone, and those it
        refuses set aside in the outbox's file (an outage stops the round); how many."""
        set_aside = 0
        for item in batch:
            try:
                self.log.deliver([(item.uid, item.row)])
            except SQLAlchemyError as exc:
                if is_outage(exc):
                    raise
                logger.error("outbox row %s refused by the database: %s", item.uid, exc)
                self.outbox.set_aside(item, str(exc))
                metrics.OUTBOX_REJECTED_ROWS.inc()
                set_aside += 1
        return set_aside
