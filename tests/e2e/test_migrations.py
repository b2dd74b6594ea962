"""Prediction-log migrations on SQLite and a real PostgreSQL, through real gunicorn gateways."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import requests
from alembic import command
from sqlalchemy import insert, text

from core.database import engine as database
from core.database import schema
from core.database.tables import predictions
from devstack.servers import ROOT, GatewayServer
from devstack.stack import get_token

pytestmark = pytest.mark.e2e


def landed_database(url: str, rows: int) -> None:
    """The table as gateways before migrations made it (the baseline's, no revision),
    with rows."""
    engine = database.database_engine(url)
    with engine.begin() as connection:
        command.upgrade(schema.alembic_config(connection), "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(insert(predictions), [{
            "request_id": f"old-{i}", "username": "client_user", "filename": f"{i}.jpg",
            "extension": "jpg", "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
            "success": True, "status_code": 200, "class_id": i, "category_name": "x",
            "score": 50, "model_version": "1.0", "latency_ms": 40} for i in range(rows)])
    engine.dispose()


def revision(url: str) -> str | None:
    engine = database.database_engine(url)
    with engine.connect() as connection:
        found = schema.current(connection)
    engine.dispose()
    return found


def gateway(torchserve, tmp_path, name, users_file, jwt_keys, url, **settings):
    return GatewayServer(torchserve, tmp_path / name, jwt_keys_file=jwt_keys,
                         users_file=users_file, database_url=url, **settings)


def test_landed_database_upgrades_with_every_row(torchserve, tmp_path, users_file, jwt_keys,
                                                 database_url):
    landed_database(database_url, rows=30)
    server = gateway(torchserve, tmp_path, "gw", users_file, jwt_keys, database_url)
    server.start()
    try:
        server.wait_up()
        assert revision(database_url) == schema.head()
        token = get_token(server)
        seen, before = [], None
        while True:
            page = requests.get(server.url + "/predictions", timeout=30,
                                params={"limit": 7, **({"before": before} if before else {})},
                                headers={"Authorization": f"Bearer {token}"}).json()
            seen += [row["request_id"] for row in page["items"]]
            before = page["next_before"]
            if before is None:
                break
        assert seen == [f"old-{i}" for i in reversed(range(30))]
    finally:
        server.stop()


@pytest.mark.parametrize("stamp, message", [
    (None, "older than this gateway needs"),
    ("9999", "newer than this gateway knows"),
])
def test_gateway_refuses_a_database_at_another_revision(torchserve, tmp_path, users_file,
                                                        jwt_keys, database_url, stamp, message):
    landed_database(database_url, rows=1)
    if stamp:
        engine = database.database_engine(database_url)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            connection.execute(text(f"INSERT INTO alembic_version VALUES ('{stamp}')"))
        engine.dispose()
    server = gateway(torchserve, tmp_path, "gw", users_file, jwt_keys, database_url,
                     database_upgrade_on_start=False)
    server.start()
    try:
        assert server.proc.wait(60) != 0
        assert f"gateway: the prediction log's schema is at revision {stamp or 'none'}, " \
               f"{message}" in server.log_tail()
    finally:
        server.stop()


def test_two_gateways_starting_together_migrate_once(torchserve, tmp_path, users_file,
                                                     jwt_keys, database_url):
    servers = [gateway(torchserve, tmp_path, f"gw{i}", users_file, jwt_keys, database_url)
               for i in range(2)]
    for server in servers:
        server.start()
    try:
        for server in servers:
            server.wait_up()
            assert "Traceback" not in server.log_tail(20000)
        assert revision(database_url) == schema.head()
        token = get_token(servers[0])
        for server in servers:
            answer = requests.get(server.url + "/predictions", timeout=30,
                                  headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200 and answer.json()["items"] == []
    finally:
        for server in servers:
            server.stop()


def test_a_waiting_upgrade_never_blocks_the_holders_concurrent_index_build(database_url):
    """While one process holds the migration lock and builds an index CONCURRENTLY (as
    0004 does), another upgrade waits for the lock without holding a snapshot that the
    build would wait for: both finish, no deadlock."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the advisory lock and concurrent index builds are PostgreSQL's")
    schema.upgrade(database_url)
    holder = database.database_engine(database_url).connect().execution_options(
        isolation_level="AUTOCOMMIT")
    try:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": schema.MIGRATION_LOCK_KEY})
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(schema.upgrade, database_url)
            time.sleep(1)  # the other upgrade is waiting for the lock by now
            holder.execute(text("CREATE INDEX CONCURRENTLY ix_test_build ON predictions (score)"))
            holder.execute(text("SELECT pg_advisory_unlock(:key)"),
                           {"key": schema.MIGRATION_LOCK_KEY})
            assert waiting.result(timeout=120) == (schema.head(), schema.head())
    finally:
        holder.execute(text("DROP INDEX IF EXISTS ix_test_build"))
        holder.close()


def test_an_upgrade_from_the_previous_revision_keeps_every_row(database_url):
    engine = database.database_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(schema.alembic_config(connection), "0003")
    rows = [{"request_id": f"r{i}", "username": "client_user", "created_at": datetime(
        2026, 11, 1, tzinfo=timezone.utc), "success": True, "status_code": 200,
        "latency_ms": i} for i in range(500)]
    with engine.begin() as connection:
        connection.execute(insert(predictions), rows)
    schema.upgrade(database_url)
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT request_id, latency_ms FROM predictions "
                                       "ORDER BY id")).all()
        assert schema.current(connection) == schema.head()
    engine.dispose()
    assert [tuple(r) for r in kept] == [(f"r{i}", i) for i in range(500)]


def test_models_and_migrations_do_not_drift(database_url):
    cli = [sys.executable, "-m", "gateway.cli.db", "--database-url", database_url]
    upgraded = subprocess.run([*cli, "upgrade"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"empty -> {schema.head()}" in upgraded.stdout
    checked = subprocess.run([*cli, "check"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0 and "no schema drift" in checked.stdout, checked.stderr
    current = subprocess.run([*cli, "current"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert current.stdout.startswith(f"{schema.head()} (head: {schema.head()})")
