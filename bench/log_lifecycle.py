"""The prediction log's lifecycle on a million rows: the usage report's query time, the
export rate and the purge rate, on SQLite and on a real PostgreSQL.

    python -m bench.log_lifecycle [--rows 1000000] [--out bench/results]

Rows come from devstack.log_rows (100 users, spread over 60 days), then ANALYZE
(PostgreSQL's autovacuum would); each report covers all of them; the purge deletes
the older half with the defaults `gateway-db purge` uses.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

from core.database import schema
from core.database.engine import database_engine
from devstack.backends import Postgres
from devstack.log_rows import synthesize
from gateway.prediction_log import export as log_export
from gateway.prediction_log import retention
from gateway.prediction_log.usage import GROUPS, usage

REPEATS = 3


def measure(url: str, rows: int) -> dict:
    schema.upgrade(url)
    engine = database_engine(url)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    synthesize(engine, rows, 1, [now - timedelta(days=d, hours=1) for d in range(0, 60, 6)],
               "user", users=100)
    figures = {"rows": rows, "insert_s": round(time.perf_counter() - started, 1)}
    with engine.begin() as connection:  # as autovacuum would after a bulk insert
        connection.execute(text("ANALYZE"))
    start, end = now - timedelta(days=61), now + timedelta(seconds=1)
    for group_by in GROUPS:
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            groups = usage(engine, start, end, group_by, None)
            times.append(time.perf_counter() - started)
        assert sum(g.requests for g in groups) == rows
        figures[f"usage_{group_by}_s"] = round(statistics.median(times), 3)
    started, size, count = time.perf_counter(), 0, 0
    for block in log_export.ndjson(log_export.rows(engine, start, end, 0),
                                      log_export.COLUMNS):
        size += len(block)
        count += block.count(b"\n")
    seconds = time.perf_counter() - started
    assert count == rows
    figures.update(export_rows_per_s=round(rows / seconds), export_mib_per_s=round(
        size / 2**20 / seconds, 1))
    done = retention.purge(engine, 30, now=now)
    figures.update(purged=done.rows_deleted, purge_rows_per_s=round(
        done.rows_deleted / done.seconds))
    engine.dispose()
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/log.db", args.rows)
    postgres = Postgres().start()
    try:
        results["postgresql"] = measure(postgres.url, args.rows)
    finally:
        postgres.stop()
    print(f"{'':<12}" + "".join(f"{k:>18}" for k in results["sqlite"]))
    for name, figures in results.items():
        print(f"{name:<12}" + "".join(f"{v:>18}" for v in figures.values()))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "log-lifecycle.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
