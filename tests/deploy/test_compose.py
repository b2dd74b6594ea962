"""The real docker-compose.yaml, brought up by the engine's Compose, used as a client would."""

import os
import secrets
import shutil
import subprocess
import time
from types import SimpleNamespace

import jwt
import pytest
import requests
import yaml

from core.database import schema
from core.settings import Settings
from devstack.servers import ROOT, free_port
from devstack.signing import signature_header
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, get_token, signing_keys, users_file_with
from devstack.waiting import CONTAINER_READY_S, wait_for
from gateway.identity.keys import KeyRing
from modelbuild import archive, signing, weights
from tests.support.containers import COMPOSE_FILE, round_trip, wait_ready
from tests.support.outage import assert_served_through, outage_under_load

# replicas, with the profile `monitoring`
SERVICES = {"serve": 2, "postgres": 1, "redis": 1, "gateway": 1, "purge": 1, "prometheus": 1}
HEALTHCHECKED = ("serve", "postgres", "redis", "gateway", "prometheus")


@pytest.fixture
def stack(engine, images, prometheus_image, name_prefix, tmp_path):
    """`compose up` of the project with the profile `monitoring`, under a unique name;
    only the published ports and the users file (the shipped one plus an admin) differ."""
    project = name_prefix.replace("-", "")
    port, prometheus_port = free_port(), free_port()
    users = tmp_path / "users.json"
    users_file_with(ROOT / "config/users.json", users, []).set_user(
        ADMIN_USER, ADMIN_PASSWORD, "admin")
    users.chmod(0o644)  # the gateway reads it as uid 10001
    keys = tmp_path / "jwt-keys"  # as `make compose-up` makes it
    keys.mkdir(mode=0o755)
    signing_keys(keys / "jwt-keys.json")
    (keys / "jwt-keys.json").chmod(0o644)
    trusted = tmp_path / "model-signing"  # as `make compose-up` makes it, its key apart
    trusted.mkdir(mode=0o755)
    signing_key = signing.new_key(tmp_path / "signing")
    shutil.copy(signing_key.with_name(signing.TRUSTED_KEYS), trusted / signing.TRUSTED_KEYS)
    (trusted / signing.TRUSTED_KEYS).chmod(0o644)
    env = {**os.environ, "POSTGRES_PASSWORD": secrets.token_urlsafe(24), "WEIGHTS": "random",
           "USERS_FILE_HOST": str(users), "JWT_KEYS_DIR_HOST": str(keys),
           "MODEL_SIGNING_DIR_HOST": str(trusted), "PREDICTION_LOG_RETENTION_DAYS": "30",
           "GATEWAY_PUBLISH": f"127.0.0.1:{port}", "COMPOSE_PROFILES": "monitoring",
           "PROMETHEUS_PUBLISH": f"127.0.0.1:{prometheus_port}"}

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
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "project": project, "keys": keys,
               "signing_key": signing_key,
               "prometheus": f"http://127.0.0.1:{prometheus_port}",
               "containers": containers, "replicas": replicas, "compose": compose,
               "started": started, "env": env}
    finally:
        compose("down", "-v", timeout=300)


def test_compose_up_healthy_round_trip_postgres_redis(engine, stack):
    containers, url = stack["containers"], stack["url"]
    for service in HEALTHCHECKED:  # serve: its image's HEALTHCHECK (the declared default)
        for container in stack["replicas"][service]:
            engine.wait_healthy(container)
    # The gateway migrated the schema before it served.
    revision = engine("exec", containers["postgres"], "psql", "-U", "classifier", "-d",
                      "classifier", "-tAc", "SELECT version_num FROM alembic_version")
    assert revision.stdout.strip() == schema.head()
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
    # The token is ES256, signed by the mounted keys file's key, as the JWKS says; a
    # rotation on the host reaches the running gateway (its directory is mounted).
    kid = jwt.get_unverified_header(token)["kid"]
    jwks = requests.get(url + "/.well-known/jwks.json", timeout=30).json()["keys"]
    assert [k["kid"] for k in jwks] == [kid]
    rotated = KeyRing(stack["keys"] / "jwt-keys.json", Settings.jwt_ttl_seconds).rotate().kid
    gateway = SimpleNamespace(url=url)
    wait_for(lambda: jwt.get_unverified_header(get_token(gateway))["kid"] == rotated,
             timeout=CONTAINER_READY_S, what="a token of the rotated key")

    # Two gateway worker processes share the login limit through Redis.
    workers = engine("exec", containers["gateway"], "python", "-c",
                     "import os, pathlib; print(sum(b'gateway-server' in p.read_bytes() "
                     "for p in pathlib.Path('/proc').glob('[0-9]*/cmdline') "
                     "if p.parent.name != str(os.getpid())))").stdout
    assert int(workers) == 3  # the master and GATEWAY_WORKERS=2
    answers = [requests.post(url + "/token", timeout=30,
                             data={"username": "mallory", "password": "wrong-password"}
                             ).status_code for _ in range(9)]
    assert answers[:5] == [401] * 5 and answers[5:] == [429] * 4, answers
    keys = engine("exec", containers["redis"], "redis-cli", "--scan").stdout
    assert "mallory" in keys, keys

    # Retention: a row older than PREDICTION_LOG_RETENTION_DAYS goes at the purge
    # service's next round (a restart starts one), the others stay.
    def psql(sql: str) -> str:
        return engine("exec", containers["postgres"], "psql", "-U", "classifier", "-d",
                      "classifier", "-tAc", sql).stdout.strip()

    psql("INSERT INTO predictions (request_id, username, created_at, success, status_code, "
         "latency_ms) VALUES ('ancient', 'client_user', now() - interval '31 days', true, "
         "200, 1)")
    kept = int(psql("SELECT count(*) FROM predictions")) - 1
    engine("restart", containers["purge"])
    wait_for(lambda: psql("SELECT count(*) FROM predictions WHERE request_id = 'ancient'")
             == "0", timeout=CONTAINER_READY_S, what="the purge service's round",
             log=lambda: engine.logs(containers["purge"]))
    assert int(psql("SELECT count(*) FROM predictions")) == kept
    assert "purged 1 rows older than" in engine.logs(containers["purge"])

    # PostgreSQL stopped under load, the gateway's worker processes SIGKILLed meanwhile
    # (podman starts no container whose depends_on are stopped, so the process stands in
    # for the container): the calls are answered, the new workers serve from the control
    # snapshot on the named volume, every row arrives once from the outbox there.
    # The parent pid follows the name in /proc/PID/stat, which may hold spaces (ours do).
    kill_workers = ("import os, pathlib, signal\n"
                    "for proc in pathlib.Path('/proc').glob('[0-9]*'):\n"
                    "    try:\n"
                    "        worker = b'gateway-server' in (proc / 'cmdline').read_bytes() \\\n"
                    "            and (proc / 'stat').read_text().rsplit(')', 1)[1].split()[1] == '1'\n"
                    "    except OSError:\n"
                    "        continue  # ended meanwhile\n"
                    "    if worker:\n"
                    "        os.kill(int(proc.name), signal.SIGKILL)\n")

    def kill_the_workers():
        time.sleep(3)
        engine("exec", containers["gateway"], "python", "-c", kill_workers)

    seen = outage_under_load(
        url, token, "compose-outage-", lambda: engine("stop", containers["postgres"]),
        lambda: engine("start", containers["postgres"]),
        lambda tag: psql(f"SELECT request_id FROM predictions WHERE request_id LIKE "
                         f"'{tag}%'").split(), kill_the_workers)
    assert_served_through(seen, "Compose: postgres stopped, gateway workers killed")
    logs = engine("logs", containers["gateway"], check=False)
    assert "serving from the control snapshot" in logs.stdout + logs.stderr

    # Only the gateway is published, on the loopback port asked for.
    for service in ("serve", "purge", "postgres", "redis"):
        for container in stack["replicas"][service]:
            assert engine.published(container) == "", service
    assert engine.published(containers["gateway"]) == f"8000/tcp -> 127.0.0.1:{stack['port']}"
    prometheus_port = stack["prometheus"].rsplit(":", 1)[1]
    assert engine.published(containers["prometheus"]) == f"9090/tcp -> 127.0.0.1:{prometheus_port}"


def test_compose_down_keeps_the_database_volume(engine, stack):
    """`down` keeps the PostgreSQL volume (docs/deployment.md's promise); `down -v` removes it."""
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
    mar = archive.build("2.0", weights.random_weights(1), tmp_path, signing_key=stack["signing_key"])
    admin = {"Authorization": f"Bearer {get_token(SimpleNamespace(url=url), ADMIN_USER, ADMIN_PASSWORD)}"}
    models = url + "/models/classifier"
    with open(mar, "rb") as body:
        pushed = requests.post(models + "/archives", params={"filename": mar.name}, data=body,
                               headers={**admin, **signature_header(mar)}, timeout=600)
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


def test_the_monitoring_profile_scrapes_the_gateway_and_every_replica(engine, stack):
    """Prometheus (profile `monitoring`) is healthy with every alert rule loaded, and
    scrapes the gateway and both serve replicas."""
    engine.wait_healthy(stack["containers"]["prometheus"])
    api = stack["prometheus"] + "/api/v1/"
    groups = requests.get(api + "rules", timeout=30).json()["data"]["groups"]
    alerts = yaml.safe_load((ROOT / "config/prometheus/alerts.yml").read_text())
    assert [rule["name"] for group in groups for rule in group["rules"]] == [
        rule["alert"] for group in alerts["groups"] for rule in group["rules"]]

    def targets_up() -> list[tuple[str, str]]:
        active = requests.get(api + "targets", timeout=30).json()["data"]["activeTargets"]
        return sorted((t["labels"]["job"], t["health"]) for t in active)

    wait_for(lambda: targets_up() == [("gateway", "up"), ("torchserve", "up"),
                                      ("torchserve", "up")],
             timeout=CONTAINER_READY_S, what="the gateway and both replicas scraped",
             log=lambda: str(targets_up()) + engine.logs(stack["containers"]["prometheus"]))

    def default_ready_workers() -> float:
        result = requests.get(api + "query", timeout=30, params={
            "query": 'max(model_version_ready_workers{default="true"})'}).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else 0

    # Each replica's worker, as the agents report it through the gateway's /metrics.
    wait_for(lambda: default_ready_workers() == 2, timeout=CONTAINER_READY_S,
             what="the default version's 2 READY workers in Prometheus")
