"""The prediction log's schema: Alembic migrations, their lock, and their command line.

    python -m gateway.db upgrade [--wait SECONDS]   # to the newest revision
    python -m gateway.db current                    # the database's revision
    python -m gateway.db check                      # models and migrations agree

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

from gateway.prediction_log import create_log_engine
from gateway.settings import Settings, SettingsError

# pg_advisory_lock key: any constant the application uses for nothing else.
MIGRATION_LOCK_KEY = 0x1C_0DB


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
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
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
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        database_url = (args.database_url
                        or Settings.from_env(require_secret=False).database_url)
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
