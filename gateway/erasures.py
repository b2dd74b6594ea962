"""Erasure (GDPR art. 17): a user's prediction-log rows deleted, their tokens ended.

The erasure is recorded in the database (`erasures`), which every gateway process and
replica can write and read, unlike the users file (read-only in Compose and
Kubernetes): tokens issued before a user's newest erasure are refused, each process
reading the record at most CACHE_SECONDS old. Only erasures younger than the longest
token lifetime matter, so that is all a process reads.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import database_down
from gateway.log_privacy import LogPrivacy
from gateway.prediction_log import PredictionLog, as_utc
from gateway.tables import erasures, predictions

CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class Erasure:
    username: str
    rows_deleted: int
    erased_at: datetime

    def describe(self) -> dict:
        return {"username": self.username, "rows_deleted": self.rows_deleted,
                "erased_at": self.erased_at.isoformat(), "tokens_revoked": True}


class Erasures:
    def __init__(self, engine: Engine, privacy: LogPrivacy, token_ttl_seconds: int):
        self.engine, self.privacy, self.ttl = engine, privacy, token_ttl_seconds
        self._cached: tuple[float, dict[str, float]] = (float("-inf"), {})

    def erase(self, username: str, erased_by: str) -> Erasure:
        """Delete every row of the user (under each name the log may keep them) and
        refuse every token they hold."""
        erased_at = datetime.now(timezone.utc)
        # Recorded first, so every process refuses the user's tokens within CACHE_SECONDS;
        # the second pass takes the rows of calls admitted in that time.
        with self.engine.begin() as connection:
            erasure_id = connection.execute(insert(erasures).values(
                username=username, erased_at=erased_at, erased_by=erased_by,
                rows_deleted=0)).inserted_primary_key[0]
        self._cached = (float("-inf"), {})
        log, theirs = PredictionLog(self.engine), predictions.c.username.in_(
            self.privacy.names_of(username))
        rows = log.delete(theirs)
        time.sleep(CACHE_SECONDS)
        rows += log.delete(theirs)
        with self.engine.begin() as connection:
            connection.execute(erasures.update().where(erasures.c.id == erasure_id)
                               .values(rows_deleted=rows))
        return Erasure(username, rows, erased_at)

    def tokens_valid_after(self, username: str) -> float:
        """Epoch seconds of the user's newest erasure that a live token may predate,
        or 0; ApiError 503 while the database cannot say (fail closed)."""
        read_at, erased = self._cached
        if time.monotonic() - read_at >= CACHE_SECONDS:
            since = datetime.now(timezone.utc) - timedelta(seconds=self.ttl + 60)
            try:
                with self.engine.connect() as connection:
                    rows = connection.execute(
                        select(erasures.c.username, func.max(erasures.c.erased_at))
                        .where(erasures.c.erased_at >= since)
                        .group_by(erasures.c.username)).all()
            except SQLAlchemyError:
                raise database_down() from None
            erased = {name: as_utc(at).timestamp() for name, at in rows}
            self._cached = (time.monotonic(), erased)
        return erased.get(username, 0.0)
