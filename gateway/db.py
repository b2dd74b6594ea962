"""The prediction log's schema: Alembic migrations, their lock, and their command line.

    python -m gateway.db upgrade [--wait SECONDS]   # to the newest revision
    python -m gateway.db current                    # the database's revision
    python -m gateway.db check                      # models and migrations agree
    python -m gateway.db purge [--every SECONDS]    # retention (gateway.retention)

DATABASE_URL names the database (as for the gateway). Upgrades hold a lock, so
gateway processes or replicas that start together never race: a PostgreSQL advisory
lock, or a lock file beside a SQLite database.
"""

import argparse
import contextlib
import fcntl
import sys
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

from gateway import retention
from gateway.prediction_log import create_log_engine
from gateway.settings import Settings, SettingsError

# pg_advisory_lock key: any constant the application uses for nothing else.
MIGRATION_LOCK_KEY = 0x1C_0DB
LOCK_POLL_SECONDS = 0.2
PURGE_RETRY_SECONDS = 30


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
    engine = create_log_engine(database_url)
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
    engine = create_log_engine(database_url)
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
                      f"than this gateway needs ({wanted}): run 'python -m gateway.db upgrade' "
                      "(Compose: the migrate service; Kubernetes: the gateway's migrate "
                      "init container), or set DATABASE_UPGRADE_ON_START=true")


def _purge(database_url: str, days: int, every: float | None) -> int:
    """Purge once, or every `every` seconds: a round that fails is reported and tried
    again within PURGE_RETRY_SECONDS."""
    engine = create_log_engine(database_url)
    try:
        while True:
            try:
                require_current(database_url)
                print(retention.purge(engine, days).describe(), flush=True)
            except (OperationalError, SchemaError) as exc:
                if every is None:
                    raise
                print(f"purge failed, next try in {min(every, PURGE_RETRY_SECONDS):g} s: "
                      f"{exc}", file=sys.stderr, flush=True)
                time.sleep(min(every, PURGE_RETRY_SECONDS))
                continue
            if every is None:
                return 0
            time.sleep(every)
    finally:
        engine.dispose()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.db", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url",
                        help=f"default: DATABASE_URL or {Settings.database_url}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="migrate to the newest revision")
    up.add_argument("--wait", type=float, default=0,
                    help="retry connecting this many seconds (the server may be starting)")
    sub.add_parser("current", help="print the database's revision")
    sub.add_parser("check", help="fail if the models differ from the migrations")
    purge = sub.add_parser("purge", help="delete the rows older than "
                           "PREDICTION_LOG_RETENTION_DAYS, but an active rollout's")
    purge.add_argument("--days", type=int, help="default: PREDICTION_LOG_RETENTION_DAYS")
    purge.add_argument("--every", type=float, metavar="SECONDS",
                       help="purge again every SECONDS, until stopped")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        settings = Settings.from_env(require_secret=False)
        database_url = args.database_url or settings.database_url
        if args.command == "purge":
            days = settings.prediction_log_retention_days if args.days is None else args.days
            if days < 0:
                raise SettingsError("--days must be 0 (keep every row) or more")
            return _purge(database_url, days, args.every)
        if args.command == "upgrade":
            before, after = upgrade(database_url, args.wait)
            print(f"prediction log schema: {before or 'empty'} -> {after} "
                  f"in {time.monotonic() - started:.1f} s")
        else:
            engine = create_log_engine(database_url)
            try:
                with engine.connect() as connection:
                    if args.command == "current":
                        print(f"{current(connection) or 'none'} (head: {head()})")
                    else:
                        command.check(alembic_config(connection))
                        print("no schema drift")
            finally:
                engine.dispose()
    except (OperationalError, CommandError, SchemaError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
