"""Many synthetic prediction-log rows at once, made by the database itself (a series in
one INSERT ... SELECT), for the lifecycle tests and `make bench-log`."""

from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.engine import Engine


def synthesize(engine: Engine, rows: int, first: int, created_at: list[datetime],
               username: str, filename: str = "synthetic.jpg", users: int = 1) -> None:
    """Rows numbered from `first`, the n-th created at created_at[n % len(created_at)],
    each a 200 for `username` (with `users` > 1: `<username>-<n % users>`)."""
    postgres = engine.dialect.name == "postgresql"
    stamps = {f"t{k}": moment if postgres
              else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
              for k, moment in enumerate(created_at)}
    pick = "CASE " + " ".join(f"WHEN n % {len(created_at)} = {k} THEN :t{k}"
                              for k in range(len(created_at))) + " END"
    who = ":username" if users == 1 else f"CAST(:username AS TEXT) || '-' || (n % {users})"
    series = ("generate_series(CAST(:first AS BIGINT), CAST(:last AS BIGINT)) AS n" if postgres
              else "(WITH RECURSIVE s(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM s "
                   "WHERE n < :last) SELECT n FROM s)")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO predictions (request_id, username, filename, extension, created_at, "
            "success, status_code, class_id, category_name, score, model_version, latency_ms) "
            f"SELECT 'syn-' || n, {who}, :filename, 'jpg', {pick}, true, 200, 1, 'x', 50, "
            f"'1.0', n % 300 FROM {series}"),
            {"first": first, "last": first + rows - 1, "username": username,
             "filename": filename, **stamps})
