"""The real docker-compose.yaml, brought up by the engine's Compose, used as a client would."""

import os
import secrets
import subprocess
import time
from types import SimpleNamespace

import pytest
import requests

from gateway import db
from modelbuild import archive, weights
from tests.support.containers import COMPOSE_FILE, round_trip, wait_ready
from tests.support.servers import ROOT, free_port
from tests.support.stack import ADMIN_PASSWORD, ADMIN_USER, get_token, users_file_with

SERVICES = {"serve": 2, "postgres": 1, "redis": 1, "gateway": 1}  # service: replicas


@pytest.fixture
def stack(engine, images, name_prefix, tmp_path):
    """`compose up` of the project under a unique name; only the published port and the
    users file (the shipped one plus an admin) differ."""
    project = name_prefix.replace("-", "")
    port = free_port()
    users = tmp_path / "users.json"
    users_file_with(ROOT / "config/users.json", users, []).set_user(
        ADMIN_USER, ADMIN_PASSWORD, "admin")
    users.chmod(0o644)  # the gateway reads it as uid 10001
    env = {**os.environ, "JWT_SECRET": secrets.token_urlsafe(48),
           "POSTGRES_PASSWORD": secrets.token_urlsafe(24), "WEIGHTS": "random",
           "USERS_FILE_HOST": str(users),
           "GATEWAY_PUBLISH": f"127.0.0.1:{port}"}

    def compose(*args, timeout=600):
        return subprocess.run([*engine.compose_command(), "-f", str(COMPOSE_FILE), "-p", project,
                               *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    started = time.monotonic()
    up = compose("up", "-d", "--no-build")
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        containers, replicas = {}, {}
        for service in SERVICES:
            ids = engine("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                         "--filter", f"label=com.docker.compose.service={service}").stdout.split()
            assert len(ids) == SERVICES[service], (service, ids)
            containers[service] = ids[0]
            replicas[service] = ids
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "project": project,
               "containers": containers, "replicas": replicas, "compose": compose,
               "started": started, "env": env}
    finally:
        compose("down", "-v", timeout=300)


def test_compose_up_healthy_round_trip_postgres_redis(engine, stack):
    containers, url = stack["containers"], stack["url"]
    for service in SERVICES:  # serve: its image's HEALTHCHECK (every declared version)
        for container in stack["replicas"][service]:
            engine.wait_healthy(container)
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
        for container in stack["replicas"][service]:
            assert engine.published(container) == "", service
    assert engine.published(containers["gateway"]) == f"8000/tcp -> 127.0.0.1:{stack['port']}"


def test_compose_down_keeps_the_database_volume(engine, stack):
    """`down` keeps the PostgreSQL volume (the README's promise); `down -v` removes it."""
    volume = f"{stack['project']}_pgdata"
    engine.wait_healthy(stack["containers"]["postgres"])
    assert stack["compose"]("down").returncode == 0
    assert engine.volume_exists(volume)
    assert stack["compose"]("down", "-v").returncode == 0
    assert not engine.volume_exists(volume)


def test_register_and_promote_through_the_gateway_reach_both_replicas(engine, stack, tmp_path):
    """An archive pushed to the gateway, registered and promoted: both serve replicas'
    agents load it from PostgreSQL and make it their default."""
    url = stack["url"]
    wait_ready(url)
    mar = archive.build("2.0", weights.random_weights(1), tmp_path)
    admin = {"Authorization": f"Bearer {get_token(SimpleNamespace(url=url), ADMIN_USER, ADMIN_PASSWORD)}"}
    models = url + "/models/classifier"
    with open(mar, "rb") as body:
        pushed = requests.post(models + "/archives", params={"filename": mar.name}, data=body,
                               headers=admin, timeout=600)
    assert pushed.status_code == 201 and pushed.json()["version"] == "2.0", pushed.text
    registered = requests.post(models + "/versions", json={"archive": mar.name}, headers=admin,
                               timeout=600)
    assert registered.status_code == 201, registered.text
    promoted = requests.put(models + "/versions/2.0/default", headers=admin, timeout=600)
    assert promoted.status_code == 200, promoted.text
    live = [r for r in promoted.json()["replicas"] if r["live"]]
    assert len(live) == 2 and promoted.json()["replicas_agree"] is True, live
    default = ("import json, urllib.request; print(json.load(urllib.request.urlopen("
               "'http://127.0.0.1:8081/models/classifier', timeout=5))[0]['modelVersion'])")
    for container in stack["replicas"]["serve"]:
        assert engine("exec", container, "python", "-c", default).stdout.strip() == "2.0"
    assert round_trip(url)["model_version"] == "2.0"
