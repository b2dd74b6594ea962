"""The database's schema: Alembic migrations (core/database/migrations) and their lock.

Upgrades hold a lock, so gateway processes or replicas that start together never race:
a PostgreSQL advisory lock, or a lock file beside a SQLite database.
"""

import contextlib
import fcntl
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

from core.database.engine import database_engine

# pg_advisory_lock key: any constant the application uses for nothing else.
MIGRATION_LOCK_KEY = 0x1C_0DB
LOCK_POLL_SECONDS = 0.2


class SchemaError(RuntimeError):
    """The database's schema revision is not the one this gateway needs."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _migration_lock(connection: Connection, database_url: str):
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        # Polled, each try its own short transaction: a process blocked in
        # pg_advisory_lock would hold a snapshot that the holder's CREATE INDEX
        # CONCURRENTLY (0004) waits for, while it waits for the holder: a deadlock.
        while not connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                     {"key": MIGRATION_LOCK_KEY}).scalar():
            connection.commit()
            time.sleep(LOCK_POLL_SECONDS)
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
            connection.commit()
    elif url.get_backend_name() == "sqlite" and url.database:
        with open(f"{url.database}.migrate-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    else:
        yield


def _connect(engine, wait: float) -> Connection:
    """A connection, retried for up to `wait` seconds while the server starts."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return engine.connect()
        except OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


def _refuse_unknown(found: str | None) -> None:
    """SchemaError for a revision that only a newer gateway knows."""
    if found is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(found)
    except CommandError:
        raise SchemaError(f"the prediction log's schema is at revision {found}, newer than "
                          f"this gateway knows (its newest is {head()}): run the newer "
                          "gateway, or downgrade the database with that version's tools"
                          ) from None


def upgrade(database_url: str, wait: float = 0) -> tuple[str | None, str]:
    """Migrate to head under the lock; (revision before, revision after)."""
    engine = database_engine(database_url)
    try:
        with _connect(engine, wait) as connection, _migration_lock(connection, database_url):
            before = current(connection)
            _refuse_unknown(before)
            connection.commit()  # Alembic runs its own: a migration may need autocommit
            command.upgrade(alembic_config(connection), "head")
            connection.commit()
            return before, current(connection)
    finally:
        engine.dispose()


def require_current(database_url: str) -> None:
    """Raise SchemaError unless the database is at this gateway's head revision."""
    engine = database_engine(database_url)
    try:
        with engine.connect() as connection:
            found = current(connection)
    finally:
        engine.dispose()
    wanted = head()
    if found == wanted:
        return
    _refuse_unknown(found)
    raise SchemaError(f"the prediction log's schema is at revision {found or 'none'}, older "
                      f"than this gateway needs ({wanted}): run 'gateway-db upgrade' "
                      "(Compose's gateway migrates when it starts; Kubernetes: the gateway's migrate "
                      "init container), or set DATABASE_UPGRADE_ON_START=true")
