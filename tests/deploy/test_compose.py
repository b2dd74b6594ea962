"""The real docker-compose.yaml, brought up by the engine's Compose, used as a client would."""

import os
import secrets
import subprocess
import time

import pytest
import requests

from gateway import db
from tests.support.containers import COMPOSE_FILE, round_trip, wait_ready
from tests.support.servers import ROOT, free_port

SERVICES = ("serve", "postgres", "redis", "gateway")


@pytest.fixture
def stack(engine, images, name_prefix):
    """`compose up` of the project under a unique name; only the published port differs."""
    project = name_prefix.replace("-", "")
    port = free_port()
    env = {**os.environ, "JWT_SECRET": secrets.token_urlsafe(48),
           "POSTGRES_PASSWORD": secrets.token_urlsafe(24), "WEIGHTS": "random",
           "USERS_FILE_HOST": str(ROOT / "config/users.json"),
           "GATEWAY_PUBLISH": f"127.0.0.1:{port}"}

    def compose(*args, timeout=600):
        return subprocess.run([*engine.compose_command(), "-f", str(COMPOSE_FILE), "-p", project,
                               *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    started = time.monotonic()
    up = compose("up", "-d", "--no-build")
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        containers = {}
        for service in SERVICES:
            ids = engine("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                         "--filter", f"label=com.docker.compose.service={service}").stdout.split()
            assert len(ids) == 1, (service, ids)
            containers[service] = ids[0]
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "project": project,
               "containers": containers, "compose": compose, "started": started}
    finally:
        compose("down", "-v", timeout=300)


def test_compose_up_healthy_round_trip_postgres_redis(engine, stack):
    containers, url = stack["containers"], stack["url"]
    for service in SERVICES:  # serve: its image's HEALTHCHECK (a READY worker)
        engine.wait_healthy(containers[service])
    # The entrypoint migrated the schema before gunicorn started (which only checks it).
    revision = engine("exec", containers["postgres"], "psql", "-U", "classifier", "-d",
                      "classifier", "-tAc", "SELECT version_num FROM alembic_version")
    assert revision.stdout.strip() == db.head()
    wait_ready(url)
    print(f"compose up -> all healthy and /readyz 200: {time.monotonic() - stack['started']:.1f} s")

    body = round_trip(url)
    token = requests.post(url + "/token", timeout=30,
                          data={"username": "client_user", "password": "tryClassifier"}
                          ).json()["access_token"]
    rows = requests.get(url + "/predictions?limit=5", timeout=30,
                        headers={"Authorization": f"Bearer {token}"}).json()["items"]
    assert rows[0]["success"] is True and rows[0]["class_id"] == body["class_id"]
    # The same row, read straight from PostgreSQL (not the gateway's SQLite default).
    query = (f"SELECT class_id, username FROM predictions WHERE request_id = "
             f"'{rows[0]['request_id']}'")
    stored = engine("exec", containers["postgres"], "psql", "-U", "classifier", "-d", "classifier",
                    "-tAc", query).stdout.strip()
    assert stored == f"{body['class_id']}|client_user"

    # Two gunicorn processes share the login limit through Redis.
    workers = engine("exec", containers["gateway"], "python", "-c",
                     "import os, pathlib; print(sum(b'gunicorn' in p.read_bytes() "
                     "for p in pathlib.Path('/proc').glob('[0-9]*/cmdline') "
                     "if p.parent.name != str(os.getpid())))").stdout
    assert int(workers) == 3  # the master and GATEWAY_WORKERS=2
    answers = [requests.post(url + "/token", timeout=30,
                             data={"username": "mallory", "password": "wrong-password"}
                             ).status_code for _ in range(9)]
    assert answers[:5] == [401] * 5 and answers[5:] == [429] * 4, answers
    keys = engine("exec", containers["redis"], "redis-cli", "--scan").stdout
    assert "mallory" in keys, keys

    # Only the gateway is published, on the loopback port asked for.
    for service in ("serve", "postgres", "redis"):
        assert engine.published(containers[service]) == "", service
    assert engine.published(containers["gateway"]) == f"8000/tcp -> 127.0.0.1:{stack['port']}"


def test_compose_down_keeps_the_database_volume(engine, stack):
    """`down` keeps the PostgreSQL volume (the README's promise); `down -v` removes it."""
    volume = f"{stack['project']}_pgdata"
    engine.wait_healthy(stack["containers"]["postgres"])
    assert stack["compose"]("down").returncode == 0
    assert engine.volume_exists(volume)
    assert stack["compose"]("down", "-v").returncode == 0
    assert not engine.volume_exists(volume)
