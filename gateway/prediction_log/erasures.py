"""Erasure (GDPR art. 17): a user's prediction-log rows deleted, their tokens ended.

The erasure is recorded in the database (`erasures`), which every gateway process and
replica can write and read, unlike the users file (read-only in Compose and
Kubernetes): tokens issued before a user's newest erasure are refused, each process
reading the record from its control snapshot (gateway.models.control_snapshot). Only erasures
younger than the longest token lifetime matter, so that is all a snapshot holds. Rows
that waited in an outbox are delivered without those of users erased since
(erased_since).
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from core.database.engine import as_utc
from core.database.tables import erasures, predictions
from gateway.models.control_snapshot import MAX_AGE_SECONDS
from gateway.prediction_log.privacy import LogPrivacy
from gateway.prediction_log.store import PredictionLog


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

    def erase(self, username: str, erased_by: str) -> Erasure:
        """Delete every row of the user (under each name the log may keep them) and
        refuse every token they hold."""
        erased_at = datetime.now(timezone.utc)
        # Recorded first, so every process refuses the user's tokens within
        # MAX_AGE_SECONDS; the second pass takes the rows of calls admitted in that time.
        with self.engine.begin() as connection:
            erasure_id = connection.execute(insert(erasures).values(
                username=username, erased_at=erased_at, erased_by=erased_by,
                rows_deleted=0)).inserted_primary_key[0]
        log, theirs = PredictionLog(self.engine), predictions.c.username.in_(
            self.privacy.names_of(username))
        rows = log.delete(theirs)
        time.sleep(MAX_AGE_SECONDS)
        rows += log.delete(theirs)
        with self.engine.begin() as connection:
            connection.execute(erasures.update().where(erasures.c.id == erasure_id)
                               .values(rows_deleted=rows))
        return Erasure(username, rows, erased_at)

    def _newest(self, since: datetime) -> dict[str, float]:
        """Each user erased since `since`: epoch seconds of their newest erasure."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(erasures.c.username, func.max(erasures.c.erased_at))
                .where(erasures.c.erased_at >= since)
                .group_by(erasures.c.username)).all()
        return {name: as_utc(at).timestamp() for name, at in rows}

    def recent(self) -> dict[str, float]:
        """The erasures a live token may predate: user -> epoch seconds."""
        return self._newest(datetime.now(timezone.utc) - timedelta(seconds=self.ttl + 60))

    def erased_since(self, since: datetime) -> dict[str, float]:
        """Every name the log may keep a user's rows under (gateway.prediction_log.privacy), for
        each user erased since `since`, with the moment."""
        return {stored: at for name, at in self._newest(since).items()
                for stored in self.privacy.names_of(name)}
