"""The database engine every part uses (the prediction log, the catalog, rollouts, the
agent, the CLIs), and how its timestamps read."""

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

CONNECT_TIMEOUT_S = 5


def _sqlite_pragmas(synchronous: str):
    def set_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")  # wait for the writer lock, never fail
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()
    return set_pragmas


def database_engine(database_url: str, synchronous: str = "NORMAL") -> Engine:
    """The engine for DATABASE_URL: SQLite in WAL mode with a busy timeout, or a pool.
    SQLite's `synchronous`: NORMAL's commits survive a process crash, only a power loss
    can drop the newest ones; FULL's survive that too (an fsync per commit)."""
    url = make_url(database_url)
    kwargs = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    else:
        # Text comes back as str even from a database created with SQL_ASCII
        # (initdb under the C locale), where psycopg would hand back bytes.
        # A server that does not answer fails a connection in CONNECT_TIMEOUT_S, not the
        # operating system's minutes (the outbox takes the rows meanwhile).
        kwargs.update(pool_size=10, max_overflow=10, pool_timeout=CONNECT_TIMEOUT_S,
                      connect_args={"client_encoding": "utf8",
                                    "connect_timeout": CONNECT_TIMEOUT_S})
    engine = create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(synchronous))
    return engine


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for the log database's timestamp columns; they are
    UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment and not moment.tzinfo else moment
