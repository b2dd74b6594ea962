"""The audit trail of model changes (table `model_history`): append-only, one hash chain
across every model.

Each change appends its record in the transaction that makes the change (core.catalog,
gateway.models.rollouts.store), so a change and its record commit together or not at
all. A record carries the hash of the one before it: editing, deleting or inserting a
record by hand breaks the chain from there, which `verify` finds (`modelctl
verify-history`). The database refuses UPDATE and DELETE on the table (migration 0008's
triggers); the chain is what shows that somebody with the owner's rights went round them.
"""

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection, Engine

from core.database.engine import as_utc
from core.database.tables import model_history, model_versions

GENESIS = "0" * 64  # the first record's prev_hash
COLUMNS = tuple(model_history.columns.keys())
# Any fixed key: every appender takes the same PostgreSQL transaction lock on it.
CHAIN_LOCK = 0x6D6F64656C  # "model"


@dataclass(frozen=True)
class Actor:
    """Who changes a model: a token's subject, `modelctl (<login>)`, or for automatic
    changes `agent <replica>` and `guard`; the request that did it, when there is one."""

    name: str
    request_id: str | None = None


GUARD = Actor("guard")  # a rollout's guard, rolling it back


@dataclass(frozen=True)
class Record:
    id: int
    at: datetime
    model_name: str
    action: str
    actor: str
    from_version: str | None
    to_version: str | None
    reason: str | None
    request_id: str | None
    default_version: str | None  # the model's default after the change
    prev_hash: str
    hash: str

    def shown(self) -> dict:
        return {**vars(self), "at": self.at.isoformat()}


def record_hash(prev_hash: str, at: datetime, model_name: str, action: str, actor: str,
                from_version: str | None, to_version: str | None, reason: str | None,
                request_id: str | None, default_version: str | None) -> str:
    """sha256 of the record's fields and its predecessor's hash, as canonical JSON; `at`
    in UTC to the microsecond, as every database reads it back."""
    fields = [prev_hash, at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
              model_name, action, actor, from_version, to_version, reason, request_id,
              default_version]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


def current_default(connection: Connection, model_name: str) -> str | None:
    """The model's declared default, as the transaction sees it."""
    return connection.execute(select(model_versions.c.version).where(
        model_versions.c.model_name == model_name, model_versions.c.is_default,
        model_versions.c.retired_at.is_(None))).scalar()


def append(connection: Connection, model_name: str, action: str, actor: Actor,
           from_version: str | None = None, to_version: str | None = None,
           reason: str | None = None) -> None:
    """Append a record in the caller's transaction: its last statement, so the chain's
    head is read under the change's own write lock (SQLite) or the chain lock
    (PostgreSQL); UNIQUE(prev_hash) turns any fork into an error, not a branch."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    default = current_default(connection, model_name)
    prev = connection.execute(select(model_history.c.hash)
                              .order_by(model_history.c.id.desc()).limit(1)).scalar() or GENESIS
    fields = {"at": datetime.now(timezone.utc), "model_name": model_name, "action": action,
              "actor": actor.name, "from_version": from_version, "to_version": to_version,
              "reason": reason, "request_id": actor.request_id, "default_version": default}
    connection.execute(insert(model_history).values(
        prev_hash=prev, hash=record_hash(prev, **fields), **fields))


def _record(row) -> Record:
    return Record(**{**row._mapping, "at": as_utc(row.at)})


class ModelHistory:
    def __init__(self, engine: Engine):
        self.engine = engine

    def page(self, model_name: str, limit: int, before: int | None = None) -> list[Record]:
        """The model's records, newest first, `limit` of them with ids below `before`."""
        query = (select(model_history).where(model_history.c.model_name == model_name)
                 .order_by(model_history.c.id.desc()).limit(limit))
        if before is not None:
            query = query.where(model_history.c.id < before)
        with self.engine.connect() as connection:
            return [_record(row) for row in connection.execute(query)]

    def records(self, model_name: str | None = None, after: int = 0,
                chunk: int = 1000) -> Iterator[Record]:
        """Every record (of one model, or all), oldest first, read `chunk` at a time."""
        query = select(model_history).order_by(model_history.c.id).limit(chunk)
        if model_name is not None:
            query = query.where(model_history.c.model_name == model_name)
        while True:
            with self.engine.connect() as connection:
                rows = [_record(row) for row in
                        connection.execute(query.where(model_history.c.id > after))]
            yield from rows
            if len(rows) < chunk:
                return
            after = rows[-1].id

    def verify(self) -> "ChainCheck":
        return check_chain(self.records())

    def defaults(self, model_name: str) -> list[str]:
        return default_stack(self.records(model_name))


@dataclass(frozen=True)
class ChainCheck:
    checked: int
    broken_at: int | None  # the first record whose hash or link does not hold
    why: str | None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def check_chain(records: Iterable[Record]) -> ChainCheck:
    """Each record links to the one before it and hashes to what it carries."""
    prev, checked = GENESIS, 0
    for record in records:
        if record.prev_hash != prev:
            return ChainCheck(checked, record.id, "its prev_hash is not the hash of the "
                                                  "record before it (one was removed or "
                                                  "inserted)")
        fields = {k: v for k, v in vars(record).items() if k not in ("id", "prev_hash", "hash")}
        if record_hash(prev, **fields) != record.hash:
            return ChainCheck(checked, record.id, "its fields do not hash to its hash "
                                                  "(edited)")
        prev, checked = record.hash, checked + 1
    return ChainCheck(checked, None, None)


def default_stack(records: Iterable[Record]) -> list[str]:
    """The model's defaults, oldest first, the current one last: each change that left
    a new default pushes it; a rollback to a version on the stack returns to it (what
    came after goes); a model left without versions starts afresh."""
    stack: list[str] = []
    for record in records:
        default = record.default_version
        if default is None:
            stack.clear()
        elif record.action == "rollback" and default in stack:
            del stack[len(stack) - stack[::-1].index(default):]
        elif not stack or stack[-1] != default:
            stack.append(default)
    return stack
