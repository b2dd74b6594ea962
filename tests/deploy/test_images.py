"""Both images run as Compose runs them, and talk to each other on a private network."""

import secrets

import pytest
import requests

from devstack.servers import free_port
from tests.support.containers import compose_service, hardening_args, round_trip, wait_ready


@pytest.fixture
def network(engine, name_prefix):
    name = f"{name_prefix}-net"
    engine("network", "create", name)
    started = []
    yield name, started
    for container in started:
        engine("rm", "-f", "-t", "5", container, check=False)
    engine("network", "rm", "-f", name, check=False)


def run(engine, network, name, service, *args):
    net, started = network
    engine("run", "-d", "--name", name, "--network", net, *hardening_args(compose_service(service)),
           *args)
    started.append(name)


def test_images_run_hardened_and_round_trip(engine, images, network, name_prefix):
    serve, gateway, port = f"{name_prefix}-serve", f"{name_prefix}-gateway", free_port()
    database, password = f"{name_prefix}-postgres", secrets.token_urlsafe(24)
    database_url = f"postgresql+psycopg://classifier:{password}@postgres:5432/classifier"
    run(engine, network, database, "postgres", "--network-alias", "postgres",
        "-e", "POSTGRES_USER=classifier", "-e", "POSTGRES_DB=classifier",
        "-e", f"POSTGRES_PASSWORD={password}", "-e", "PGDATA=/tmp/pgdata",  # a tmpfs
        "--health-cmd", "pg_isready -U classifier",
        "postgres:16-alpine")
    engine.wait_healthy(database)
    # The serve image runs TorchServe and its model agent, which loads what the database
    # declares (on a new one: the image's classifier-1.0.mar, adopted).
    run(engine, network, serve, "serve", "--network-alias", "serve",
        "-e", f"DATABASE_URL={database_url}", "image-classifier-serve:1.0")
    run(engine, network, gateway, "gateway", "-p", f"127.0.0.1:{port}:8000",
        "-e", f"JWT_SECRET={secrets.token_urlsafe(48)}", "-e", f"DATABASE_URL={database_url}",
        "-e", "TORCHSERVE_URL=http://serve:8080", "image-classifier-gateway:1.0")
    # The serve image's own HEALTHCHECK: the declared default served (after the gateway
    # migrated the schema).
    engine.wait_healthy(serve)
    engine.wait_healthy(gateway)
    # The management API answers on the serve container's loopback, and nowhere else.
    probe = "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=5)"
    assert engine("exec", serve, "python", "-c", probe, "http://127.0.0.1:8081/models",
                  check=False).returncode == 0
    refused = engine("exec", gateway, "python", "-c", probe, "http://serve:8081/models",
                     check=False)
    assert refused.returncode != 0 and "refused" in refused.stderr.lower(), refused.stderr
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    body = round_trip(url)
    assert body["model_version"] == "1.0"
    # Nothing of TorchServe is published; the gateway only on loopback.
    assert engine.published(serve) == ""
    assert engine.published(gateway) == f"8000/tcp -> 127.0.0.1:{port}"
    # The serve image holds the agent and the shared core, not the gateway, and no Flask.
    assert engine("exec", serve, "ls", "/app").stdout.split() == ["agent", "config", "core",
                                                                   "scripts"]
    no_flask = engine("exec", serve, "python", "-c", "import flask", check=False)
    assert no_flask.returncode != 0 and "No module named 'flask'" in no_flask.stderr
    for container, uid in ((serve, "10001"), (gateway, "10001")):
        assert engine("exec", container, "id", "-u").stdout.strip() == uid
        denied = engine("exec", container, "touch", "/etc/probe", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, container
        caps = engine("exec", container, "grep", "CapEff", "/proc/self/status").stdout
        assert caps.split()[-1] == "0000000000000000", container
    assert requests.get(url + "/healthz", timeout=10).json() == {"status": "ok"}
