"""Both images run as Compose runs them, and talk to each other on a private network."""

import secrets

import pytest
import requests

from tests.support.containers import compose_service, hardening_args, round_trip, wait_ready
from tests.support.servers import free_port


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
    run(engine, network, serve, "serve", "--network-alias", "serve", "image-classifier-serve:1.0")
    # The serve image's own HEALTHCHECK: the model's worker is READY.
    engine.wait_healthy(serve)
    run(engine, network, gateway, "gateway", "-p", f"127.0.0.1:{port}:8000",
        "-e", f"JWT_SECRET={secrets.token_urlsafe(48)}",
        "-e", "TORCHSERVE_URL=http://serve:8080", "-e", "TORCHSERVE_MANAGEMENT_URL=http://serve:8081",
        "image-classifier-gateway:1.0")
    engine.wait_healthy(gateway)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    body = round_trip(url)
    assert body["model_version"] == "1.0"
    # Nothing of TorchServe is published; the gateway only on loopback.
    assert engine.published(serve) == ""
    assert engine.published(gateway) == f"8000/tcp -> 127.0.0.1:{port}"
    for container, uid in ((serve, "10001"), (gateway, "10001")):
        assert engine("exec", container, "id", "-u").stdout.strip() == uid
        denied = engine("exec", container, "touch", "/etc/probe", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, container
        caps = engine("exec", container, "grep", "CapEff", "/proc/self/status").stdout
        assert caps.split()[-1] == "0000000000000000", container
    assert requests.get(url + "/healthz", timeout=10).json() == {"status": "ok"}
