"""Database migrations on SQLite and a real PostgreSQL, through real granian gateways, and
what the model history's table guarantees on both."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import requests
from alembic import command
from sqlalchemy import insert, text
from sqlalchemy.exc import DatabaseError

from core.catalog import Catalog
from core.database import engine as database
from core.database import schema
from core.database.tables import predictions
from core.model_history import Actor, ModelHistory
from devstack.servers import ROOT, GatewayServer
from devstack.stack import get_token
from tests.support.small_archives import mar

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


def test_model_history_is_one_chain_under_concurrent_changes_and_refuses_edits(database_url,
                                                                              tmp_path):
    """Eight models changed at once keep one unforked chain (PostgreSQL: the chain lock;
    SQLite: the writer lock); the database refuses UPDATE and DELETE on the history, and
    an edit made round that refusal breaks the chain."""
    schema.upgrade(database_url)
    engine = database.database_engine(database_url)

    def changes(i: int) -> None:
        catalog = Catalog(engine, f"m{i}")
        for version in ("1.0", "2.0"):
            path = mar(tmp_path / f"m{i}-{version}.mar", version, model=f"m{i}")
            catalog.declare(catalog.store_archive(path, path.name, Actor("ops")), Actor("ops"))
        catalog.set_default("2.0", Actor("ops"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(changes, range(8)))
    history = ModelHistory(engine)
    assert len(list(history.records())) == 8 * 5 and history.verify().ok
    for statement in ("UPDATE model_history SET actor = 'x'", "DELETE FROM model_history"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE model_history DISABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER model_history_no_update"))
        connection.execute(text("UPDATE model_history SET to_version = '9.9' WHERE id = 7"))
    assert history.verify().broken_at == 7
    engine.dispose()
