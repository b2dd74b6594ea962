"""The database's command line: its schema (core.database.schema) and the log's retention.

    gateway-db upgrade [--wait SECONDS]   # to the newest revision
    gateway-db current                    # the database's revision
    gateway-db check                      # models and migrations agree
    gateway-db purge [--every SECONDS]    # retention (gateway.prediction_log.retention)

DATABASE_URL names the database (as for the gateway).
"""

import argparse
import sys
import time

from alembic import command
from alembic.util.exc import CommandError
from sqlalchemy.exc import OperationalError

from core.database.engine import database_engine
from core.database.schema import (SchemaError, alembic_config, current, head, require_current,
                                  upgrade)
from core.settings import Settings, SettingsError
from gateway.prediction_log import retention

PURGE_RETRY_SECONDS = 30


def _purge(database_url: str, days: int, every: float | None) -> int:
    """Purge once, or every `every` seconds: a round that fails is reported and tried
    again within PURGE_RETRY_SECONDS."""
    engine = database_engine(database_url)
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
    parser = argparse.ArgumentParser(prog="gateway-db", description=__doc__,
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
            engine = database_engine(database_url)
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
