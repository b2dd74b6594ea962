"""The manifests' own pod specs, run with `podman kube play` (see support/kube.py for
exactly what that proves and what only a real cluster can)."""

from types import SimpleNamespace

import jwt
import pytest
import requests
import yaml

from core.settings import Settings
from devstack.servers import free_port
from devstack.stack import get_token
from devstack.waiting import CONTAINER_READY_S, wait_for
from gateway.identity.keys import KeyRing
from tests.support.containers import round_trip, wait_ready
from tests.support.kube import KubePlay, pod_name, render

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.fixture
def kube(engine, images, tmp_path):
    if engine.name != "podman":
        pytest.skip("runs the manifests with podman kube play; on a cluster use make deploy-check")
    docs = [d for d in yaml.safe_load_all(render(tmp_path)) if d]
    play = KubePlay(engine, docs, tmp_path, free_port())
    try:
        yield play
    finally:
        play.stop()


def run_probe(engine, pod: str, container: str, probe: dict):
    """One probe as the kubelet runs it: exec in the container, or HTTP/TCP to the
    pod's own address (from a throwaway container that joins the pod)."""
    if "exec" in probe:
        return engine("exec", container, *probe["exec"]["command"], check=False, timeout=60)
    if "httpGet" in probe:
        check = ("import urllib.request; urllib.request.urlopen("
                 f"'http://127.0.0.1:{probe['httpGet']['port']}{probe['httpGet']['path']}', "
                 "timeout=5)")
    else:
        check = (f"import socket; socket.create_connection(('127.0.0.1', "
                 f"{probe['tcpSocket']['port']}), timeout=5)")
    return engine("run", "--rm", "--pod", pod, "--entrypoint", "python",
                  "image-classifier-gateway:1.0", "-c", check, check=False, timeout=60)


def wait_probes(engine, kube, workload: str):
    spec = kube.workloads[workload]["spec"]["template"]["spec"]
    names = kube.containers(workload)
    for container in spec["containers"]:
        name = names[container["name"]]
        for kind in PROBES:
            if kind in container:
                wait_for(lambda: run_probe(engine, pod_name(kube.workloads[workload]), name,
                                           container[kind]).returncode == 0,
                         timeout=CONTAINER_READY_S, what=f"{workload}/{container['name']} {kind}",
                         log=lambda: engine.logs(name), interval=2)


def test_manifests_run_and_round_trip(engine, kube, tmp_path):
    kube.start_backends()
    for workload in ("postgres", "redis"):
        wait_probes(engine, kube, workload)
    kube.start("serve")  # TorchServe and its model agent, which waits for the schema
    kube.start("gateway")  # its migrate init container first
    assert "prediction log schema: empty -> " in kube.init_logs
    for workload in ("serve", "gateway"):
        wait_probes(engine, kube, workload)
    assert set(kube.containers("serve")) == {"torchserve", "model-agent"}
    url = f"http://127.0.0.1:{kube.gateway_port}"
    wait_ready(url)
    round_trip(url)

    # Tokens are ES256, signed by the gateway-signing-keys Secret's key; the operator's
    # rotation (gateway.identity.keys rotate, kubectl apply -k) reaches the running gateway
    # without a restart, and tokens of the old key keep working.
    keys = KeyRing(tmp_path / "k8s/secrets/jwt-keys.json", Settings.jwt_ttl_seconds)
    gateway = SimpleNamespace(url=url)
    old_token = get_token(gateway)
    [old_key] = keys.current().keys
    header = jwt.get_unverified_header(old_token)
    assert (header["alg"], header["kid"]) == ("ES256", old_key.kid)
    rotated = keys.rotate().kid
    kube.refresh_secret("gateway-signing-keys", {"jwt-keys.json": keys.path.read_bytes()})
    wait_for(lambda: jwt.get_unverified_header(get_token(gateway))["kid"] == rotated,
             timeout=CONTAINER_READY_S, what="a token of the rotated key")
    jwks = requests.get(url + "/.well-known/jwks.json", timeout=30).json()["keys"]
    assert sorted(k["kid"] for k in jwks) == sorted([old_key.kid, rotated])
    assert requests.get(url + "/predictions", headers={"Authorization": f"Bearer {old_token}"},
                        timeout=30).status_code == 200

    for workload in kube.workloads:
        for name in kube.containers(workload).values():
            state = engine("inspect", name, "--format", "{{.State.Status}} {{.RestartCount}}")
            assert state.stdout.split() == ["running", "0"], (name, engine.logs(name))
            user = engine("exec", name, "id", "-u").stdout.strip()
            assert user != "0", name
            if workload != "gateway":
                assert engine.published(name) == "", name
